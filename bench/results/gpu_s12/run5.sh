# Fifth GPU call of session 12: probe2 with the host's tokenizer threads as they are and limited to 4 (is the
# lost quarter of a throughput call the tokenizer's threads crowding the launching thread?).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
timeout 100 python3 bench/results/gpu_s12/probe2.py > $R/probe2.log 2>&1; echo "rc=$?" >> $R/probe2.log
RAYON_NUM_THREADS=4 timeout 100 python3 bench/results/gpu_s12/probe2.py > $R/probe2_rayon4.log 2>&1; echo "rc=$?" >> $R/probe2_rayon4.log
