# GPU call 1 (issue 14): train the shipped reranker candidates with `rag-rerank train` (default recipe + LoRA on
# every linear layer, so it ships as a few-MB delta), two learning rates at once, on KorQuAD train articles
# (validation = the validation articles); export each as a delta with reference logits.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" || exit 1
W=.gpu/work/korquad
nvidia-smi --query-gpu=name,memory.used --format=csv > $OUT/gpu.txt
train() {  # $1 name, $2 lr
  timeout 500 python3 -m rag_rerank.cli train --data $W/train.jsonl --candidates $W/train.mined.jsonl.gz \
    --eval-data $W/validation.jsonl --corpus $W/train_corpus.jsonl --mode hybrid --output /tmp/m/$1 --seed 1 \
    --base /tmp/e5cut --lora --set 'lora_targets=["query","key","value","dense"]' --lr $2 \
    --set known_queries=false --set show_progress=false > $OUT/train_$1.log 2>&1
  echo "rc=$?" >> $OUT/train_$1.log
  python3 bench/ship_reranker.py /tmp/m/$1 /tmp/e5cut /tmp/ship/$1 >> $OUT/train_$1.log 2>&1
  cp /tmp/m/$1/report.md /tmp/ship/$1/ 2>/dev/null
}
train lr1e-4 1e-4 &
train lr3e-4 3e-4 &
wait
cd /tmp/ship && tar czf $OUT/ship.tgz . ; ls -la $OUT
