cd /work/main
export PYTHONPATH= HF_HUB_OFFLINE=1
for task in chat kor; do
  col=$([ $task = chat ] && echo chatbot_train || echo kornli_train)
  for cfg in "a 7 1" "b 1 7"; do set -- $cfg
    .venv/bin/python -m rag_rerank.cli train --data /tmp/exp/${task}_sub.jsonl --store .benchwork/stores --collection $col \
      --output /tmp/exp/${task}_$1 --epochs 1 --set num_hard_negatives=$2 --set num_random_negatives=$3 \
      --set 'freeze=["embeddings"]' --set show_progress=false --set eval_steps=0.25 --set save_steps=0.25 --set dataloader_workers=0 --max-length 128 > /tmp/exp/${task}_$1.log 2>&1
    echo "$task $1 rc=$?" >> /tmp/exp/done.txt
  done
done
