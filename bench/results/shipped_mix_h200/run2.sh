# GPU call 2 (issue 14, multi-task), on the still-warm machine of call 1 (its export step was cut by the
# 10-minute limit; the trained models were still in /tmp/m): export both seeds as deltas, rebuild each from its
# delta on the e5 twin (what users get), evaluate: KorQuAD test articles on each first stage, KorNLI test
# (now trained on), chatbot test (zero-shot: held out of training). Seed 2 ships: better fused validation MRR@10.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for s in 1 2; do
  python3 bench/ship_reranker.py /tmp/m/seed$s /tmp/e5cut /tmp/ship/seed$s > $OUT/ship_seed$s.log 2>&1
  cp /tmp/m/seed$s/report.md /tmp/m/seed$s/metrics.json /tmp/ship/seed$s/
  python3 -c "from rag_rerank.model_delta import apply_delta as a; a('/tmp/ship/seed$s', '/tmp/e5cut', '/tmp/shipped$s')" || exit 1
done
(cd /tmp/ship && tar czf $OUT/ship.tgz .)
ev() {  # $1 task, $2 first stage, $3 mode, $4 seed
  W=.gpu/work/$1; S=$W/test.$2.jsonl.gz
  timeout 400 python3 -m rag_rerank.cli eval --data $S --candidates $S --corpus $W/test_corpus.jsonl --mode $3 \
    --candidate-k 50 --json --batch-size 256 --reranker /tmp/shipped$4 > $OUT/eval_$1_$2_seed$4.json 2> /tmp/err_$1_$2_$4
  echo "rc=$?" >> $OUT/eval_$1_$2_seed$4.json
}
ev korquad hybrid hybrid 2 &
ev korquad bm25-kiwi bm25 2 &
ev korquad dense dense 2 &
ev kornli hybrid hybrid 2 &
ev chatbot hybrid hybrid 2 &
ev korquad hybrid hybrid 1 &
ev chatbot hybrid hybrid 1 &
wait
cat /tmp/err_* | grep -v "it/s" | tail -c 2500 > $OUT/errs.txt
ls -la $OUT
