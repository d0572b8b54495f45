# GPU call 1 of session 14 (one NVIDIA H200): lat_probe.py under the tokenizer's default threads and 8.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt; lscpu | grep -i "model name\|mhz\|socket\|thread" >> $R/gpu.txt; uptime >> $R/gpu.txt
W=.gpu/work/korquad
P="bench/results/gpu_s14/lat_probe.py /tmp/shipped1 $W/test.bm25-kiwi.jsonl.gz $W/test_corpus.jsonl"
date +%T >> $R/times.txt
timeout 150 python3 $P > $R/probe_default.log 2>&1; echo "rc=$?" >> $R/probe_default.log; date +%T >> $R/times.txt
RAYON_NUM_THREADS=8 timeout 120 python3 $P > $R/probe_rayon8.log 2>&1; echo "rc=$?" >> $R/probe_rayon8.log; date +%T >> $R/times.txt
