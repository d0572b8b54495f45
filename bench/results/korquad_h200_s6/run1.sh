# GPU call 1 (issue 13): korquad default pipeline, seeds 1 and 2 (test part), and one recipe lever
# on korquad validation only (15 hard + 1 random at the selection's 1,200 steps).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" || exit 1
cp -r .gpu/work /tmp/w
nvidia-smi --query-gpu=name,memory.used --format=csv > $OUT/gpu.txt
(timeout 470 python3 bench/select_recipe.py --work /tmp/w --tasks korquad --seed 1 --budget 460 \
   --recipes "bce 15 hard + 1 random" --train-arg=--max-steps=1200 --train-arg=--base=/tmp/e5cut \
   --out $OUT/selection.md > $OUT/select.log 2>&1) &
timeout 530 python3 bench/quality.py train --work /tmp/w --tasks korquad --seeds 1,2 --jobs 2 \
   --rerank-batch 256 --base /tmp/e5cut > $OUT/train.log 2>&1
echo "quality rc=$?" >> $OUT/train.log
wait
cd /tmp/w && find . -type f \( -name '*.json' -o -name '*.md' -o -name '*.log' -o -name '*.txt' \) \
   -not -path '*/checkpoint-*' -size -20M | tar czf $OUT/results.tgz -T -
ls -la $OUT
