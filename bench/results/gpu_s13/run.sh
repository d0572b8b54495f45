# GPU call 1 of session 13 (one NVIDIA H200): which pass size suits the GPU best. Session 12 read
# batch_size=64 12 % faster than the default 128 in one probe; this times 32, 48, 64, 96, 128 (default) and
# 256 side by side, compile rows too, with sentence-transformers fp32 timed first and again last.
# Inputs carried in .gpu/ (ignored): e5cut.bin (bench/e5_subset.py over the test texts), work/korquad
# (bench/quality.py's task files + `rag-rerank eval --mode bm25 --candidate-k 50 --save-candidates`).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "import torch, transformers, tokenizers; print(torch.__version__, transformers.__version__, tokenizers.__version__)" > $R/setup.log 2>&1
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" >> $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
W=.gpu/work/korquad
date +%T >> $R/times.txt
timeout 540 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
  --latency-docs 50 --latency-repeat 50 --no-encode --batch-sizes 32,48,64,96,256 --compile \
  --out $R/rerank_speed > $R/speed.log 2>&1
echo "rc=$?" >> $R/speed.log
date +%T >> $R/times.txt
