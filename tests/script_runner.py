"""Running an experiment script in-process, as its command line would (shared by the figure tests)."""
import importlib
import sys

from absl import flags

PANEL = 240  # pixels per panel side: common.panels' 2.4 inches at 100 dpi


def run_script(name, *args):
    """Import experiments.<name> with fresh flags, parse ``args`` and call its main()."""
    module = f"experiments.{name}"
    sys.modules.pop(module, None)
    mod = importlib.import_module(module)
    own = [f.name for f in flags.FLAGS.get_flags_for_module(mod)]
    try:
        flags.FLAGS([module, *args])
        mod.main([])
    finally:
        for n in own:
            delattr(flags.FLAGS, n)
        flags.FLAGS.unparse_flags()
        sys.modules.pop(module, None)
