# GPU call 1 (issue 14, multi-task): the shipped reranker's recipe (default + LoRA r=16 on every linear layer,
# lr 1e-4) trained on KorQuAD train articles + KorNLI (mined against its own corpus) + KorSTS graded pairs via
# `rag-rerank train --extra-data`, two seeds at once; chatbot is held out as the zero-shot task.
# Rows per epoch double with the extra data (45,968 vs 22,986), so 1.75 epochs = 2,515 steps, about the
# KorQuAD-only run's 2,718 (and what fits one 10-minute device call with both seeds sharing the GPU).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" || exit 1
W=.gpu/work/korquad
nvidia-smi --query-gpu=name,memory.used --format=csv > $OUT/gpu.txt
train() {  # $1 seed
  timeout 500 python3 -m rag_rerank.cli train --data $W/train.jsonl --candidates $W/train.mined.jsonl.gz \
    --eval-data $W/validation.jsonl --corpus $W/train_corpus.jsonl --mode hybrid --output /tmp/m/seed$1 --seed $1 \
    --base /tmp/e5cut --lora --set 'lora_targets=["query","key","value","dense"]' --lr 1e-4 \
    --extra-data .gpu/work/kornli_train/train.mined.jsonl.gz --extra-data .gpu/work/korsts/sts-train.tsv \
    --epochs 1.75 --set eval_steps=0.25 --set save_steps=0.25 \
    --set known_queries=false --set show_progress=false > /tmp/train_seed$1.log 2>&1
  echo "rc=$?" >> /tmp/train_seed$1.log
  grep -v "it/s\]" /tmp/train_seed$1.log | tail -c 6000 > $OUT/train_seed$1.log
  python3 bench/ship_reranker.py /tmp/m/seed$1 /tmp/e5cut /tmp/ship/seed$1 >> $OUT/train_seed$1.log 2>&1
  cp /tmp/m/seed$1/report.md /tmp/m/seed$1/metrics.json /tmp/ship/seed$1/ 2>/dev/null
}
train 1 &
train 2 &
wait
cd /tmp/ship && tar czf $OUT/ship.tgz . ; ls -la $OUT
