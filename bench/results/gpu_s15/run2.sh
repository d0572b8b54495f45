# GPU call 2 of session 15 (one NVIDIA H200): the residual add + LayerNorm kernel (rag_rerank.add_norm):
# probe_norm.py (correctness fp16/bf16, time per call for rows-per-program 1-16), then the core bench rows twice
# (the defaults now with the kernel; a new fused_norm=False row beside them).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
timeout 90 python3 bench/results/gpu_s15/probe_norm.py > $R/probe_norm.log 2>&1; echo "rc=$?" >> $R/probe_norm.log
date +%T >> $R/times.txt
W=.gpu/work/korquad
A="--device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --latency-docs 50 --latency-repeat 50 --no-encode"
timeout 210 python3 bench/rerank_speed.py $A --batch-sizes "" --repeat 3 --out $R/rerank_speed_run1 > $R/speed_run1.log 2>&1
echo "rc=$?" >> $R/speed_run1.log; date +%T >> $R/times.txt
timeout 180 python3 bench/rerank_speed.py $A --batch-sizes "" --repeat 2 --out $R/rerank_speed_run2 > $R/speed_run2.log 2>&1
echo "rc=$?" >> $R/speed_run2.log; date +%T >> $R/times.txt
