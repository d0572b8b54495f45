# Sixth GPU call of session 12: probe3 (levers for the next session, measured side by side in one process).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
timeout 150 python3 bench/results/gpu_s12/probe3.py > $R/probe3.log 2>&1; echo "rc=$?" >> $R/probe3.log
