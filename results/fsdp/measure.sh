# 1 process x 2 threads vs 2 gloo ranks (1 thread each) sharing one base (model.fsdp_shards=2), embedded model
# writes /tmp/fsdp/emb1 (one process) and /tmp/fsdp/emb2 (FSDP); their metrics.jsonl are one-process-metrics.jsonl and two-ranks-fsdp-metrics.jsonl here
cd /work/main
export PYTHONPATH=src
C="--config configs/cpu-demo-frost.yaml --steps 3 --no-progress --set train.val_every=0 --set train.checkpoint_every=0"
rm -rf /tmp/fsdp/emb1 /tmp/fsdp/emb2
/usr/bin/time -v .venv/bin/python -m frost.cli train $C --threads 2 --run-dir /tmp/fsdp/emb1 2> /tmp/fsdp/emb1.time | tail -1
OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 2 -m frost.cli train $C --threads 1 --run-dir /tmp/fsdp/emb2 --set model.fsdp_shards=2 2> /tmp/fsdp/emb2.time | tail -1
