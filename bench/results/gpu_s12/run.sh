# GPU call of session 12 (one NVIDIA H200): issue 15's GPU bars re-measured, to confirm session 11's single
# run (8.75x ST, its margin rested on a slow baseline): the shipped reranker, defaults vs sentence-transformers,
# two full runs back to back in one call. No ALBERT, no compile rows (session 11 has them). No wheels.
# Inputs carried in .gpu/ (ignored): e5cut.bin (bench/e5_subset.py over the test texts), work/korquad
# (bench/quality.py's task files + `rag-rerank eval --mode bm25 --candidate-k 50 --save-candidates`).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "import torch, transformers, tokenizers; print(torch.__version__, transformers.__version__, tokenizers.__version__)" > $R/setup.log 2>&1
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" >> $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
W=.gpu/work/korquad
for run in 1 2; do
  date +%T >> $R/times.txt
  timeout 250 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut \
    --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
    --latency-docs 50 --latency-repeat 50 --no-encode --out $R/rerank_speed_run$run > $R/speed_run$run.log 2>&1
  echo "rc=$?" >> $R/speed_run$run.log
done
date +%T >> $R/times.txt
