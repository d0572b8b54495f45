# GPU call (issues 14 and 15), one NVIDIA H200. NOT RUN in the session that wrote it: no device machine could
# be started, then too little device time was left. Run it as is in the next session.
# 1. issue 14: the shipped reranker (seed 1, as committed) rebuilt from its delta: the KorQuAD BM25 / dense rows,
#    which the previous call measured for seed 2 only (outputs: eval_*_seed1.json);
# 2. issue 15, alone on the GPU afterwards: bench/rerank_speed.py, ours vs sentence-transformers, 40 KorQuAD test
#    questions x their Kiwi-BM25 top 50 (2,000 pairs), 1 x 50 latency, the shipped model and a bongsoo-shaped ALBERT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" || exit 1
R=bench/results/shipped_mix_h200
ev() {  # $1 task, $2 first stage, $3 mode
  W=.gpu/work/$1; S=$W/test.$2.jsonl.gz
  timeout 90 python3 -m rag_rerank.cli eval --data $S --candidates $S --corpus $W/test_corpus.jsonl --mode $3 \
    --candidate-k 50 --json --batch-size 256 --reranker /tmp/shipped1 > $OUT/eval_$1_$2_seed1.json 2> /tmp/err_$1_$2
  echo "rc=$?" >> $OUT/eval_$1_$2_seed1.json
}
ev korquad bm25-kiwi bm25 &
ev korquad dense dense &
wait
W=.gpu/work/korquad
timeout 125 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --albert /tmp/albert \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 40 --depth 50 \
  --latency-docs 50 --latency-repeat 30 --out $OUT/rerank_speed > /tmp/speed.log 2>&1
echo "rc=$?" >> /tmp/speed.log
(grep -v "it/s" /tmp/speed.log | tail -c 4000; cat /tmp/err_* | grep -v "it/s" | tail -c 2000) > $OUT/log.txt
