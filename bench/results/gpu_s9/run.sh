# One GPU call (one NVIDIA H200), session 9: issues 14, 15 and 16 together (device time is scarce).
# carry: .whl (datasets, dill, multiprocess; llama-index-core, langchain-core/-classic and what the image
# lacks of theirs), .gpu (e5cut.bin: the e5 twin; work/: bench/quality.py's saved candidates, test parts only).
# 1. issue 14: the shipped reranker (seed 1) rebuilt from its delta; KorQuAD over BM25 / dense, KorNLI hybrid;
# 2. issue 16: bench/framework_quality.py, KorQuAD test through a LlamaIndex query engine and a LangChain
#    compression retriever beside the CLI's pipeline row;      (1 and 2 share the GPU: quality only)
# 3. issue 15, alone on the GPU afterwards: bench/rerank_speed.py (120 questions x 50 = 6,000 pairs), then
#    a second run with the torch.compile probe.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  > /tmp/pip.log 2>&1 || { tail -20 /tmp/pip.log > $OUT/log.txt; exit 1; }
I=$PWD/integrations
export PYTHONPATH=/tmp/site:$PWD:$I/llama-index-rag-rerank:$I/langchain-rag-rerank PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=/tmp/res; mkdir -p $R
pack() { tar czf $OUT/results.tgz -C $R . ; }
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
ev() {  # $1 task, $2 first stage, $3 mode
  W=.gpu/work/$1; S=$W/test.$2.jsonl.gz
  timeout 150 python3 -m rag_rerank.cli eval --data $S --candidates $S --corpus $W/test_corpus.jsonl --mode $3 \
    --candidate-k 50 --json --reranker /tmp/shipped1 > $R/eval_$1_$2_seed1.json 2> $R/err_$1_$2.log
  echo "rc=$?" >> $R/eval_$1_$2_seed1.json
}
ev korquad bm25-kiwi bm25 &
ev korquad dense dense &
ev kornli hybrid hybrid &
W=.gpu/work/korquad
timeout 200 python3 bench/framework_quality.py --candidates $W/test.hybrid.jsonl.gz --corpus $W/test_corpus.jsonl \
  --reranker /tmp/shipped1 --out $R/framework_quality > $R/framework.log 2>&1; echo "rc=$?" >> $R/framework.log
wait; pack
timeout 170 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --albert /tmp/albert \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
  --latency-docs 50 --latency-repeat 50 --out $R/rerank_speed > $R/speed.log 2>&1; echo "rc=$?" >> $R/speed.log
pack
timeout 120 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --compile --no-encode \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
  --latency-docs 50 --latency-repeat 50 --out $R/rerank_speed_compile > $R/compile.log 2>&1; echo "rc=$?" >> $R/compile.log
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
pack
