# Second GPU call of session 10 (one NVIDIA H200): padding-free (packed) passes with the varlen flash kernel,
# every variant beside sentence-transformers in one
# run, on the shipped reranker and the bongsoo ALBERT shape. No wheels: the bench needs only the image's packages.
# (run1 also cut small calls in halves to overlap tokenising: slower on e5, 22.8 vs 10.4 ms p50: dropped.)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=/tmp/res; mkdir -p $R
pack() { tar czf $OUT/results.tgz -C $R . ; }
python3 -c "import torch, transformers, tokenizers; print(torch.__version__, transformers.__version__, tokenizers.__version__)
import rag_rerank.packed as p; print('public varlen:', p._public_varlen())" > $R/setup.log 2>&1
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" >> $R/setup.log 2>&1 || { pack; exit 1; }
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || { pack; exit 1; }
W=.gpu/work/korquad
timeout 530 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --albert /tmp/albert \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
  --latency-docs 50 --latency-repeat 30 --compile --no-encode --out $R/rerank_speed > $R/speed.log 2>&1; echo "rc=$?" >> $R/speed.log
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
pack
