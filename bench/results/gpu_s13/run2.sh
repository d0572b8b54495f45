# GPU call 2 of session 13 (one NVIDIA H200): the defaults with batch_size 64 on CUDA, against 32, 48,
# 128 (the old default) and 256 and the compile rows, sentence-transformers first and last; before it two
# probes of the 1 x 50 call's tokenising (tok_probe.py) and of cutting small calls in k pieces
# (latency_probe.py). Inputs: .gpu/ as in run.sh.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt; lscpu >> $R/gpu.txt 2>&1
W=.gpu/work/korquad P=bench/results/gpu_s13
for n in "" 1 4 8; do
  RAYON_NUM_THREADS=$n timeout 60 python3 $P/tok_probe.py /tmp/e5cut $W/test_corpus.jsonl $([ -z "$n" ] && echo --torch) >> $R/tok_probe.log 2>&1
done
date +%T >> $R/times.txt
timeout 90 python3 $P/latency_probe.py /tmp/shipped1 $W/test.bm25-kiwi.jsonl.gz $W/test_corpus.jsonl > $R/latency_probe.log 2>&1
date +%T >> $R/times.txt
timeout 400 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
  --latency-docs 50 --latency-repeat 50 --no-encode --batch-sizes 32,48,128,256 --compile \
  --out $R/rerank_speed > $R/speed.log 2>&1
echo "rc=$?" >> $R/speed.log
date +%T >> $R/times.txt
