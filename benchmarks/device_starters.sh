#!/bin/bash
# One prepared GPU call (the device tool): train four starter candidates side by side,
# run the CUDA tests and the GPU speed benchmarks, and bring back models and logs.
#   here:  echo /.gpu_data/ >> .git/info/exclude
#          python benchmarks/pack_real.py ../shared/data/real .gpu_data/real   (~45 MB)
#   there: run  command="MIN=6 bash benchmarks/device_starters.sh"  carry=[".gpu_data"]
# Candidates: the nuclei and phase starters continued from the shipped files at batch
# 32/16 (no anchor), and new 32-channel ones. Score what comes back here, on the CPU
# (make_starter_model.py --score-only, bench_accuracy.py). Not yet run: no GPU was lent.
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
W=/tmp/w; mkdir -p $W; M=${MIN:-6}; R=$PWD/.gpu_data/real; S=$PWD/src/napari_unet/models
(nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())") > $W/env.log 2>&1
common="--steps 1000000 --max-minutes $M --validate-every 500 --no-score"
cd benchmarks
python3 make_starter_model.py $R --from $S/starter.safetensors --batch-size 32 $common -o $W/nuc16.safetensors --last $W/nuc16_last.safetensors > $W/nuc16.log 2>&1 &
python3 make_starter_model.py $R --width 32 --batch-size 32 $common -o $W/nuc32.safetensors --last $W/nuc32_last.safetensors > $W/nuc32.log 2>&1 &
python3 make_phase_starter.py $R --from $S/phase_starter.safetensors --batch-size 16 $common -o $W/ph16.safetensors > $W/ph16.log 2>&1 &
python3 make_phase_starter.py $R --width 32 --batch-size 16 $common -o $W/ph32.safetensors > $W/ph32.log 2>&1 &
cd ..
(timeout 150 python3 -m pytest -q -p no:cacheprovider -o addopts="-ra" tests/test_train.py tests/test_checkpoint.py tests/test_augment.py tests/test_tiling.py -k cuda > $W/cuda_tests.log 2>&1
 timeout 100 python3 benchmarks/bench_predict.py --device cuda --preset paper --no-memory > $W/bench_predict.log 2>&1
 timeout 100 python3 benchmarks/bench_train.py --device cuda > $W/bench_train.log 2>&1) &
wait
nvidia-smi --query-gpu=name,memory.used --format=csv >> $W/env.log 2>&1
for f in nuc16 nuc16_last nuc32 nuc32_last ph16 ph32; do cp $W/$f.safetensors $OUT/ 2>/dev/null; done
tar czf $OUT/logs.tgz -C $W $(cd $W && ls *.log)
ls -la $OUT; grep -h "trained\|^step" $W/nuc*.log $W/ph*.log | tail -30; tail -5 $W/cuda_tests.log
