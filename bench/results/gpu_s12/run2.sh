# Second GPU call of session 12: the probe (split vs one chunk, where a throughput call's time goes), then the
# bench twice with small calls split in two on the GPU (the new default), the same arguments as run.sh.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
timeout 120 python3 bench/results/gpu_s12/probe.py > $R/probe.log 2>&1; echo "rc=$?" >> $R/probe.log
W=.gpu/work/korquad
for run in 1 2; do
  date +%T >> $R/times.txt
  timeout 200 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut \
    --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
    --latency-docs 50 --latency-repeat 50 --no-encode --out $R/rerank_speed_run$run > $R/speed_run$run.log 2>&1
  echo "rc=$?" >> $R/speed_run$run.log
done
date +%T >> $R/times.txt
