"""Benchmark: what writing a GiB of new file data costs this machine's kernel, on memory the host took back or not.

Every byte-path benchmark here (submission, download, pull, merge) writes a GiB or more of new files, and its
CPU figures moved from run to run by a second or more per GiB with the same code. This measures the machine's
part: the kernel CPU of copying a GiB into new page-cache pages, right after a GiB was freed and after some
seconds of idle. On the KVM guests seen here the second costs several times the first, consistent with the host
taking back memory the guest left free (their balloon device reports free pages, and their kernel counts what
it reported): the first write to such a page faults in the host, and the guest sees that time as kernel CPU
inside whatever copy touched the page first (in the coordinator, the copy of each chunk into the page cache).

Each round writes 1 GiB from one reused 1 MiB buffer into a new file with ``os.write`` (the coordinator's writer
does the same from the bytes gRPC received), fsyncs and deletes it: "warm" right after deleting a file of the
same size, "cold" after ``--idle-s`` seconds with nothing freed. Rounds alternate; the medians are the process's
system CPU during the writes (fsync excluded).

    .venv/bin/python bench/page_cache_cost.py [--rounds 3] [--idle-s 10] [--write]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine_line, replace_section  # noqa: E402

MiB = 1 << 20
BALLOON_DEVICE, REPORTING_BIT = "0x0005", 5  # virtio device id; VIRTIO_BALLOON_F_REPORTING
REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")  # this VM's kernel counts what it gave


def free_page_reporting() -> bool:
    """Whether a virtio balloon that reports free pages to the host is attached."""
    for device in Path("/sys/bus/virtio/devices").glob("*"):
        try:
            if (device / "device").read_text().strip() == BALLOON_DEVICE:
                features = (device / "features").read_text().strip()
                return len(features) > REPORTING_BIT and features[REPORTING_BIT] == "1"
        except OSError:
            continue
    return False


def reported_mib() -> float | None:
    """MiB of free memory the guest has reported to the host so far, where its kernel counts them."""
    try:
        return int(REPORTED_KIB.read_text()) / 1024
    except (OSError, ValueError):
        return None


def system_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def write_new_file(path: Path, size: int, block: bytearray) -> tuple[float, float]:
    """(wall s, system CPU s) of writing ``size`` bytes to a new file; then fsynced and deleted."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started, cpu = time.perf_counter(), system_cpu()
        for _ in range(size // len(block)):
            os.write(fd, block)
        wall, cpu = time.perf_counter() - started, system_cpu() - cpu
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    return wall, cpu


def measure(directory: Path, size: int, rounds: int, idle_s: float) -> dict[str, list[tuple[float, float, float]]]:
    """kind -> [(wall s, system CPU s, MiB reported to the host between freeing and writing)] per round."""
    block = bytearray(os.urandom(MiB))
    target = directory / "new-file.bin"
    results: dict[str, list[tuple[float, float, float]]] = {"cold": [], "warm": []}
    write_new_file(target, size, block)  # warm-up: the file system's own structures
    for n in range(rounds):
        for kind in ("cold", "warm") if n % 2 == 0 else ("warm", "cold"):
            if kind == "warm":
                write_new_file(target, size, block)  # frees `size` bytes of page cache just before
            reported = reported_mib()
            if kind == "cold":
                time.sleep(idle_s)
            given = (reported_mib() or 0.0) - (reported or 0.0)
            wall, cpu = write_new_file(target, size, block)
            results[kind].append((wall, cpu, given))
            print(f"round {n + 1} {kind}: {cpu:.2f} s system CPU, {given:.0f} MiB reported before it", flush=True)
    return results


def report(results: dict[str, list[tuple[float, float, float]]], size: int, rounds: int, idle_s: float) -> str:
    med = {k: tuple(statistics.median(column) for column in zip(*v, strict=True)) for k, v in results.items()}
    counted = reported_mib() is not None
    gib = size / (1024 * MiB)
    cold, warm = med["cold"][1] / gib, med["warm"][1] / gib
    return "\n".join(
        [
            "Command: `.venv/bin/python bench/page_cache_cost.py --write`  ",
            f"Machine: {machine_line()}; virtio-balloon free page reporting: "
            f"{'on' if free_page_reporting() else 'off'}.",
            "",
            f"{size // MiB} MiB written to a new file in 1 MiB `os.write` calls from one reused buffer; medians of "
            f"{rounds} alternating rounds. Warm: right after deleting a file of the same size. Cold: after "
            f"{idle_s:g} s with nothing freed.",
            "",
            "| new file data written | wall (s) | system CPU per GiB (s) | MiB reported to the host before it |",
            "|---|---|---|---|",
            *(
                f"| {label} | {med[k][0]:.2f} | {med[k][1] / gib:.2f} | {f'{med[k][2]:.0f}' if counted else '?'} |"
                for label, k in (("warm: right after a file was deleted (baseline)", "warm"), ("cold", "cold"))
            ),
            "",
            f"Cold / warm: {cold / warm:.1f}× the kernel CPU, {cold - warm:.2f} CPU-s more per GiB. Every benchmark "
            "that writes new files pays somewhere between the two, depending on what the machine freed in the "
            "seconds before; the baselines (`cp`, curl) pay it too. The reported MiB (where the kernel counts them) "
            "show the host being handed memory during the idle, though not always as much as the cold write touches.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-page-cache-") as tmp:
        results = measure(Path(tmp), args.size_mib * MiB, args.rounds, args.idle_s)
    text = report(results, args.size_mib * MiB, args.rounds, args.idle_s)
    print(text)
    if args.write:
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "page_cache_cost", "New file data on this VM", text)


if __name__ == "__main__":
    main()
