"""What the benchmark scripts share (imported by scripts run as `python scripts/<name>.py`)."""

# Prepended to a child's `python -c` code: at exit the child prints its own peak RSS (VmHWM is per
# process image, while ru_maxrss read in the parent would carry the parent's own peak).
PEAK_PRELUDE = (
    "import atexit, sys\n"
    "def _peak():\n"
    "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
    "    print('PEAK_KB', kb, file=sys.stderr)\n"
    "atexit.register(_peak)\n"
)
