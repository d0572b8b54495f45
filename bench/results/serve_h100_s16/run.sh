# Session 16, one NVIDIA H100 (16 cores): bench/serve_load.py against `rag-rerank serve --device cuda` with the
# shipped reranker (rebuilt from its delta on the e5 twin cut to the chatbot texts, .gpu/e5cut.bin).
# carry: .whl (fastapi, starlette, uvicorn, httptools, pydantic(+core), annotated-types/-doc, typing-inspection,
# opentelemetry-api, importlib-metadata), .gpu (e5cut.bin, data/chatbot/ChatbotData.csv).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAG_RERANK_DATA=$PWD/.gpu/data
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')"
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')"
# first run (serve_load_one_client.json): one client process, 4000 requests
python3 bench/serve_load.py --reranker /tmp/shipped1 --device cuda --concurrency 64 --requests 4000 --workers 1 2 4 --wait-ms 5
# second run (serve_load.json/.md): eight client processes, 8000 requests
python3 bench/serve_load.py --reranker /tmp/shipped1 --device cuda --concurrency 64 --clients 8 --requests 8000 --workers 1 2 4 --wait-ms 5 --out $OUT/serve_load
