# GPU call 5 of session 14 (one NVIDIA H200): the session's final code (token cache, long passages cut for the
# tokenizer's threads, latency over 50 questions' calls too), the core bench rows (a first try of two runs ran past 170 s each before saving: the bench now saves after each row; a second try lost its machine; --repeat 2 to fit the session's last device seconds).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=$OUT; date +%T > $R/times.txt
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" > $R/setup.log 2>&1 || exit 1
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
W=.gpu/work/korquad
A="--device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 2 --latency-docs 50 --latency-repeat 50 --no-encode"
date +%T >> $R/times.txt
for n in 1; do
  timeout 190 python3 bench/rerank_speed.py $A --batch-sizes "" --out $R/rerank_speed_run$n > $R/speed_run$n.log 2>&1
  echo "rc=$?" >> $R/speed_run$n.log; date +%T >> $R/times.txt
done
