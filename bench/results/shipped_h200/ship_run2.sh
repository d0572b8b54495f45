# GPU call 2 (issue 14): the shipped reranker (lr 1e-4, chosen on validation in call 1) rebuilt from its delta on
# the vocabulary-cut e5 twin, evaluated on held-out KorQuAD articles (each first stage + the default pipeline)
# and zero-shot on KorNLI and chatbot test parts; meanwhile a second seed of the same recipe trains (stability).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('.gpu/ship', '/tmp/e5cut', '/tmp/shipped')" || exit 1
ev() {  # $1 task, $2 first stage, $3 mode, $4 model, $5 tag
  W=.gpu/work/$1; S=$W/test.$2.jsonl.gz
  timeout ${T:-480} python3 -m rag_rerank.cli eval --data $S --candidates $S --corpus $W/test_corpus.jsonl --mode $3 \
    --candidate-k 50 --json --batch-size 256 --reranker $4 > $OUT/eval_$1_$2$5.json 2> $OUT/eval_$1_$2$5.err
  echo "rc=$?" >> $OUT/eval_$1_$2$5.err
}
ev korquad hybrid hybrid /tmp/shipped "" &
ev korquad bm25-kiwi bm25 /tmp/shipped "" &
ev korquad dense dense /tmp/shipped "" &
ev kornli hybrid hybrid /tmp/shipped "" &
ev chatbot hybrid hybrid /tmp/shipped "" &
(W=.gpu/work/korquad; timeout 430 python3 -m rag_rerank.cli train --data $W/train.jsonl --candidates $W/train.mined.jsonl.gz \
    --eval-data $W/validation.jsonl --corpus $W/train_corpus.jsonl --mode hybrid --output /tmp/m/seed2 --seed 2 \
    --base /tmp/e5cut --lora --set 'lora_targets=["query","key","value","dense"]' --lr 1e-4 \
    --set known_queries=false --set show_progress=false > $OUT/train_seed2.log 2>&1; echo "rc=$?" >> $OUT/train_seed2.log
 T=150 ev korquad hybrid hybrid /tmp/m/seed2 _seed2) &
wait
tail -c 3000 $OUT/train_seed2.log > $OUT/train_seed2.tail; rm $OUT/train_seed2.log
cat $OUT/*.err | grep -v "it/s" | tail -c 2500 > $OUT/errs.txt; rm $OUT/*.err
ls -la $OUT
