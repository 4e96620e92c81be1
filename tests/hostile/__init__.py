"""Hostile plugin distributions, written on demand: each a tiny module and a dist-info folder.

``install(root, *names)`` writes the named plugins under ``root``; putting ``root`` on sys.path or
PYTHONPATH makes them installed plugins for importlib.metadata, exactly like a pip install.
Each family is one way a plugin author (hostile or careless) can try to take hal over, hang it
or make it leak a secret (issue 12).
"""

from __future__ import annotations

from pathlib import Path

from helpers import backend_source, make_dist

#: A secret the hostile plugins try to leak through reasons, findings, errors and crash output.
LEAK = "hunter2-" + "Zq8" * 4

backend = backend_source  # the families below read best with the short name


#: family -> (entry-point name, module source).  None of them may stop hal or hide cpu.
FAMILIES: dict[str, tuple[str, str]] = {
    # finding 2: process-level and hangs (in-process commands survive those that do not kill)
    "import_sleeps": ("sleepy", "import time\ntime.sleep(3600)\n"),
    "import_sysexit": ("quitter", "raise SystemExit(7)\n"),
    "hook_hangs": ("hookhang", "import time, hal\n@hal.hookimpl\ndef hal_backends():\n"
                               "    time.sleep(3600)\n"),
    "hook_sysexit": ("hookexit", "import hal\n@hal.hookimpl\ndef hal_backends():\n"
                                 "    raise SystemExit(5)\n"),
    "probe_sysexit": ("probeexit", backend("probeexit", "raise SystemExit(4)")),
    # finding 3: a built-in name
    "takes_cpu": ("cpu", backend("cpu", device_type="meta", priority="1000")),
    "backend_named_cpu": ("notcpu", backend("cpu", device_type="meta", priority="1000")),
    # finding 4: values not to be trusted
    "priority_str": ("prio", backend("prio", priority="'100'")),
    "priority_none": ("prionone", backend("prionone", priority="None")),
    "priority_nan": ("prionan", backend("prionan", priority="float('nan')")),
    "priority_bool": ("priobool", backend("priobool", priority="True")),
    "device_type_injection": ("inject", backend("inject", device_type="cuda;rm")),
    "probe_str_available": ("lies", backend("lies", "return hal.Probe('no', 'x', 1)")),
    "probe_negative_count": ("negcount", backend("negcount", "return hal.Probe(True, 'x', -3)")),
    "probe_str_count": ("strcount", backend("strcount", "return hal.Probe(True, 'x', '2')")),
    "memory_dict": ("memdict", backend("memdict", priority="2000", extra="""
        def memory(self, index=0):
            return {'total': 1}
    """)),
    "devices_ints": ("devints", backend("devints", priority="2000", extra="""
        def devices(self):
            return [1, 2]
    """)),
    "versions_int": ("verint", backend("verint", priority="2000", extra="""
        def versions(self):
            return 3
    """)),
    "memory_nan": ("memnan", backend("memnan", priority="2000", extra="""
        def memory(self, index=0):
            return hal.MemoryInfo(float('nan'), 0, 0, 0, 0, 'nan')
    """)),
    "name_newline": ("newline", backend("evil\n")),
    # finding 5: probes that hang or call back into hal
    "probe_hangs": ("probehang", backend("probehang", "import time\ntime.sleep(3600)",
                                         priority="3000")),
    "probe_reenters": ("reenter", backend("reenter", "return hal.Probe(True, str(hal.get_device()), 1)",
                                          priority="3000")),
    "probe_resets": ("resetter", backend("resetter", "hal.reset()\nreturn hal.Probe(True, 'x', 1)",
                                         priority="3000")),
    "probe_memory_info": ("meminfo", backend("meminfo", "hal.memory.info()\n"
                                                        "return hal.Probe(True, 'x', 1)", priority="3000")),
    # finding 6: prints and environment changes
    "prints": ("printer", backend("printer", "print('PROBE NOISE')\nreturn hal.Probe(False, 'no', 0)",
                                  head="print('IMPORT NOISE {not json')\n")),
    "env_changer": ("envy", backend("envy", "return hal.Probe(False, 'no', 0)",
                                    head="import os\nos.environ['HAL_DEVICE'] = 'meta'\n"
                                         "os.environ.pop('PATH', None)\n")),
    # finding 7: secrets in reasons, exceptions and findings
    "leaky": ("leaky", backend("leaky", "import os\nraise RuntimeError('cannot log in: password="
                                        f"{LEAK} as ' + os.environ.get('LEAKY_TOKEN', ''))",
                               extra=f"""
        def findings(self):
            return [hal.Finding('leaky.secret', 'info', 'token ghp_{LEAK}AAAAAAAAAAAA', 'pw {LEAK}')]
    """)),
}

#: Families that end or kill the process: only the doctor can survive them (isolated child).
FATAL: dict[str, tuple[str, str]] = {
    "import_os_exit": ("exiter", f"import sys\nsys.stderr.write('password={LEAK}\\n')\n"
                                 "import os\nos._exit(7)\n"),
    "probe_segfault": ("segv", backend("segv", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
                                       priority="3000")),
    "hook_os_exit": ("hookosexit", "import os, hal\n@hal.hookimpl\ndef hal_backends():\n"
                                   "    os._exit(9)\n"),
    # SIGKILL to its whole process group: the doctor's parent must not be in it
    "probe_sigkill": ("killer", backend("killer", "import os, signal\nos.killpg(0, signal.SIGKILL)",
                                        priority="3000")),
}


def install(root: Path, *families: str) -> Path:
    """Write the named hostile plugins (from FAMILIES or FATAL) as distributions under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for family in families:
        ep, source = FAMILIES.get(family) or FATAL[family]
        make_dist(root, f"hal-hostile-{family.replace('_', '-')}", "0.1", {ep: f"hostile_{family}"},
                  {f"hostile_{family}": source})
    return root
