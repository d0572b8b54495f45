# GPU call 4 of session 14 (one NVIDIA H200): probe4 (memory-efficient varlen attention vs flash).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
W=.gpu/work/korquad
timeout 150 python3 bench/results/gpu_s14/probe4.py /tmp/shipped1 $W/test.bm25-kiwi.jsonl.gz $W/test_corpus.jsonl > $R/probe4.log 2>&1
echo "rc=$?" >> $R/probe4.log; date +%T >> $R/times.txt
