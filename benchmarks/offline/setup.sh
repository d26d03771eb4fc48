# Source on the offline GPU machine, in the project's root, once the parts of bundle.sh are in
# /tmp/fl/:   source benchmarks/offline/setup.sh
# Unpacks the bundle to /tmp/site (once), puts it on PYTHONPATH and PATH (py-spy), installs the
# project without dependencies and says what it found. ~10 s on an H200 machine.
t0=$(date +%s)
if [ ! -d /tmp/site/nvidia/dali ]; then
  if command -v xz >/dev/null; then
    cat /tmp/fl/part.* | xz -T0 -dc | tar x -C /tmp || { echo "unpacking the parts failed"; return 1; }
  else
    cat /tmp/fl/part.* | python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('/tmp')" || { echo "unpacking the parts failed"; return 1; }
  fi
  mkdir -p /tmp/site/bin && cp /tmp/site/py_spy-*.data/scripts/py-spy /tmp/site/bin/ && chmod +x /tmp/site/bin/py-spy
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/tmp/pip-e.log 2>&1 || tail -3 /tmp/pip-e.log
python3 -c "import nvidia.dali as d, lmdb, torch, fastload; print('DALI', d.__version__, '| lmdb', lmdb.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
echo "set-up took $(( $(date +%s) - t0 )) s; py-spy: $(command -v py-spy)"
