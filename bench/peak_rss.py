"""Peak resident memory of this process, measured as ctpipe's bench measures its own (Linux):
`reset()` sets the high-water mark VmHWM to the current resident size (writing 5 to
/proc/self/clear_refs), `mib()` reads it back. Both sides' peaks include what their process
holds anyway (the library code touched, the model), so a row compares whole processes doing
the same work."""


def reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
