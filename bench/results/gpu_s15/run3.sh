# GPU call 3 of session 15 (one NVIDIA H200): the residual add + LayerNorm kernel (rag_rerank.add_norm):
# the final code of issue 15: the kernel only where passes replay CUDA graphs. Run 1 with the ALBERT-shape rows,
# run 2 the e5 rows again, to confirm both GPU bars twice on one host.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
date +%T >> $R/times.txt
W=.gpu/work/korquad
A="--device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --latency-docs 50 --latency-repeat 50 --no-encode"
timeout 320 python3 bench/rerank_speed.py $A --batch-sizes "" --repeat 3 --albert /tmp/albert --out $R/rerank_speed_run1 > $R/speed_run1.log 2>&1
echo "rc=$?" >> $R/speed_run1.log; date +%T >> $R/times.txt
timeout 175 python3 bench/rerank_speed.py $A --batch-sizes "" --repeat 2 --out $R/rerank_speed_run2 > $R/speed_run2.log 2>&1
echo "rc=$?" >> $R/speed_run2.log; date +%T >> $R/times.txt
