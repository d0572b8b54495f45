# GPU call 2 (issue 13): korquad default pipeline, seeds 1 and 2, on the test part; the hybrid
# (default) first stage first, then Kiwi BM25; no un-fine-tuned base row (untrained head, 0.04).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" || exit 1
cp -r .gpu/work /tmp/w
timeout 545 python3 bench/quality.py train --work /tmp/w --tasks korquad --seeds 1,2 --jobs 2 \
   --rerank-batch 256 --base /tmp/e5cut --first-stages hybrid,bm25-kiwi --no-base-row > $OUT/train.log 2>&1
echo "quality rc=$?" >> $OUT/train.log
cd /tmp/w && find . -type f \( -name '*.json' -o -name '*.md' -o -name '*.log' \) \
   -not -path '*/checkpoint-*' -not -name 'tokenizer*' -size -20M | tar czf $OUT/results.tgz -T -
