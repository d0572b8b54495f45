# Fourth GPU call of session 9 (one NVIDIA H200): bench/serve_load.py against `rag-rerank serve --device cuda`
# (the shipped reranker), 2,000 requests of 1 question x 5 chatbot answers at concurrency 32, micro-batching
# on (5 ms) and off. carry: .whl (now with fastapi, starlette, uvicorn, opentelemetry-api), .gpu (e5cut.bin).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  > /tmp/pip.log 2>&1 || { tail -20 /tmp/pip.log > $OUT/log.txt; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > /dev/null 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" > /dev/null 2>&1 || exit 1
timeout 400 python3 bench/serve_load.py --reranker /tmp/shipped1 --device cuda --out $OUT/serve_load > $OUT/serve.log 2>&1
echo "rc=$?" >> $OUT/serve.log
