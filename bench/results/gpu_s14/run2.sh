# GPU call 2 of session 14 (one NVIDIA H200): probe2.py (host launch parts, pass device time vs pairs,
# kernel profile, warm ids, fused q/k/v experiment).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
W=.gpu/work/korquad
date +%T >> $R/times.txt
timeout 200 python3 bench/results/gpu_s14/probe2.py /tmp/shipped1 $W/test.bm25-kiwi.jsonl.gz $W/test_corpus.jsonl > $R/probe2.log 2>&1; echo "rc=$?" >> $R/probe2.log; date +%T >> $R/times.txt
