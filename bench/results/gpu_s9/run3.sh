# Third GPU call of session 9 (one NVIDIA H200): the framework benchmark again (LlamaIndex fetched tiktoken's
# cl100k on the second try; the reranker's tokenizer counts now), and the e5 speed rows again with the
# bi-encoder timed as the median of 3 runs (its single 0.65 s run was slower than ST fp32).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  > /tmp/pip.log 2>&1 || { tail -20 /tmp/pip.log > $OUT/log.txt; exit 1; }
I=$PWD/integrations
export PYTHONPATH=/tmp/site:$PWD:$I/llama-index-rag-rerank:$I/langchain-rag-rerank PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=/tmp/res; mkdir -p $R
pack() { tar czf $OUT/results.tgz -C $R . ; }
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
W=.gpu/work/korquad
timeout 150 python3 bench/framework_quality.py --candidates $W/test.hybrid.jsonl.gz --corpus $W/test_corpus.jsonl \
  --reranker /tmp/shipped1 --out $R/framework_quality > $R/framework.log 2>&1; echo "rc=$?" >> $R/framework.log
pack
timeout 340 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
  --latency-docs 50 --latency-repeat 30 --compile --out $R/rerank_speed > $R/speed.log 2>&1; echo "rc=$?" >> $R/speed.log
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
pack
