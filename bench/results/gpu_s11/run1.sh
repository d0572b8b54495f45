# First GPU call of session 11 (one NVIDIA H200): CUDA graphs of packed passes (rag_rerank/graphs.py), beside
# every earlier variant and sentence-transformers, on the shipped reranker and the bongsoo ALBERT shape; and a
# probe of the tokenizer's parallelism on this host. No wheels: the image's packages.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
R=/tmp/res; mkdir -p $R
pack() { tar czf $OUT/results.tgz -C $R . ; }
date +%T > $R/times.txt
python3 -c "import torch, transformers, tokenizers; print(torch.__version__, transformers.__version__, tokenizers.__version__)" > $R/setup.log 2>&1
python3 -c "from rag_rerank.models import materialize_file as m; m('.gpu/e5cut.bin', '/tmp/e5cut')" >> $R/setup.log 2>&1 || { pack; exit 1; }
python3 -c "from rag_rerank.model_delta import apply_delta as a; a('rag_rerank/shipped/ko-reranker-e5-small', '/tmp/e5cut', '/tmp/shipped1')" >> $R/setup.log 2>&1 || { pack; exit 1; }
P=bench/results/gpu_s11/probe.py
{ python3 $P tokenize; RAYON_NUM_THREADS=16 python3 $P tokenize; TOKENIZERS_PARALLELISM=false python3 $P tokenize; } > $R/probe_tokenize.log 2>&1
timeout 60 python3 $P graphs > $R/probe_graphs.log 2>&1; echo "rc=$?" >> $R/probe_graphs.log
date +%T >> $R/times.txt; pack
W=.gpu/work/korquad
timeout 470 python3 bench/rerank_speed.py --device cuda --model /tmp/shipped1 --encoder /tmp/e5cut --albert /tmp/albert \
  --candidates $W/test.bm25-kiwi.jsonl.gz --corpus $W/test_corpus.jsonl --queries 120 --depth 50 --repeat 3 \
  --latency-docs 50 --latency-repeat 50 --compile --no-encode --out $R/rerank_speed > $R/speed.log 2>&1; echo "rc=$?" >> $R/speed.log
date +%T >> $R/times.txt
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1; nproc >> $R/gpu.txt
pack
