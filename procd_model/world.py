"""The EriX world for `python -m emu run`: the default scenario and lone images.

Default scenario: rootd boots the committed procd, which spawns `phase0-exit` on rootd's request.
An IMAGE whose .erix_image note says it is procd replaces the committed procd in that scenario;
any other IMAGE runs alone as the root process with a generic envelope (role GENERIC, or the role
its .erix_image note declares). `--procd ELF` (RunRequest.procd) replaces the committed procd in
the default scenario or any `--scenario`; a scenario may name its own ELF files as images
(procd_model/scenario_images.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from emu.accounting import CpuModel
from emu.elf import ElfError, ElfImage, Perm, load_elf
from emu.gdbstub.target import Debugger
from emu.trace import Trace
from emu.world import FuzzRequest, InputError, Instrument, RunOutcome, RunRequest
from procd_model.abi import CapPurpose, CapType, Rights, Role, RootdStatus, Status
from procd_model.caps import Capability, CapTable
from procd_model.cpu_model import cpu_model
from procd_model.debug import attach_debugger
from procd_model.dump import DumpRecorder, PausedKernel, image_input, replay_inputs, scenario_input
from procd_model.images import (
    BOOT_IMAGES,
    boot_image_named,
    brings_own_stack,
    fixtures_dir,
    image_role,
    load_boot_image,
)
from procd_model.kernel import ROOT_PID, ImageLayoutError, Kernel, Process, RunState, ScriptedFaults, StopReason
from procd_model.messages import EnvelopeSlot, build_envelope
from procd_model.ops import MODEL_FACTS
from procd_model.peers import Crashd
from procd_model.rootd import (
    FOUNDATION_IMAGE,
    ManifestEntry,
    ProcdBoot,
    Rootd,
    Services,
    SpawnRecord,
    default_procd_boot,
)
from procd_model.scenario import (
    Scenario,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
    read_scenario_file,
    unmet_expectations,
)
from procd_model.scenario_images import UserImage

DEFAULT_MANIFEST = (ManifestEntry("phase0-exit", Role.TEST),)


def run(request: RunRequest, trace: Trace) -> RunOutcome:
    """Run what `request` asks for; every guest crash is named, dumped as `request.dumps` says."""
    inputs = replay_inputs(__name__, request.max_instructions, request.cpu)
    recorder = DumpRecorder(None, request.dumps.folder, inputs, request.dumps.stop_at)
    outcome = _run(request, trace, recorder)
    paused = PausedKernel(recorder.kernel) if recorder.kernel is not None else None
    return replace(outcome, dumps=tuple(recorder.written), paused=paused, captured=recorder.captured)


def _run(request: RunRequest, trace: Trace, recorder: DumpRecorder) -> RunOutcome:
    instrument = request.instrument
    cpu = cpu_model(request.cpu)
    procd = None if request.procd is None else load_procd(request.procd)
    if request.procd is not None and procd is not None:
        recorder.replay["procd"] = image_input(request.procd, procd)
    if request.scenario is not None:
        if request.image is not None:
            raise InputError("give an IMAGE or --scenario, not both (a procd build goes in --procd)")
        try:
            scenario = load_scenario(request.scenario)
            text = read_scenario_file(Path(request.scenario)) if _names_a_file(request.scenario) else None
        except ScenarioError as exc:
            raise InputError(str(exc)) from None
        recorder.replay["scenario"] = scenario_input(request.scenario, text)
        return run_scenario(
            trace,
            scenario,
            request.max_instructions,
            instrument,
            procd_image=procd,
            debugger=request.debugger,
            recorder=recorder,
            cpu=cpu,
        )
    if request.image is None:
        return run_bootstrap(
            trace,
            request.max_instructions,
            procd_image=procd,
            instrument=instrument,
            debugger=request.debugger,
            recorder=recorder,
            cpu=cpu,
        )
    if procd is not None:
        raise InputError("give an IMAGE or --procd, not both (--procd runs a scenario with that procd)")
    image = _load_user_image(request.image)
    recorder.replay["image"] = image_input(request.image, image)
    if image_role(image) is Role.PROCD:
        return run_bootstrap(
            trace,
            request.max_instructions,
            procd_image=image,
            instrument=instrument,
            debugger=request.debugger,
            recorder=recorder,
            cpu=cpu,
        )
    return run_alone(
        trace,
        image,
        request.max_instructions,
        instrument=instrument,
        debugger=request.debugger,
        recorder=recorder,
        cpu=cpu,
    )


def _names_a_file(scenario: str) -> bool:
    """Whether `load_scenario` reads `scenario` as a file (not a built-in name)."""
    path = Path(scenario)
    return path.suffix == ".toml" or path.is_file()


def run_scenario(
    trace: Trace,
    scenario: Scenario,
    max_instructions: int,
    instrument: Instrument | None = None,
    *,
    procd_image: ElfImage | None = None,
    debugger: Debugger | None = None,
    recorder: DumpRecorder | None = None,
    cpu: CpuModel | None = None,
) -> RunOutcome:
    """rootd spawns the scenario's manifest through procd; its expectations decide the outcome.

    A halt the scenario expects (`[expect] halts`, its text in the message, and the other
    expectations met) is a success: ok, with stop "halted". Each run has a crashd of its own, so
    running one scenario object again starts from nothing.
    """
    if scenario.services is not None:
        scenario = replace(scenario, services=replace(scenario.services, crashd=Crashd()))
    kernels: list[Kernel] = []

    def prepare(kernel: Kernel) -> None:
        kernels.append(kernel)
        _inject(scenario, kernel)

    outcome = run_bootstrap(
        trace,
        max_instructions,
        manifest=scenario.manifest,
        procd_image=procd_image,
        images=scenario.images,
        instrument=instrument,
        services=scenario.services,
        extra_checks=lambda kernel: unmet_expectations(scenario, kernel.logs),
        prepare=prepare,
        before_procd=scenario.before_procd,
        debugger=debugger,
        recorder=recorder,
        cpu=cpu,
    )
    halts = scenario.expect.halts
    if outcome.stop != "halted" or halts is None:
        return outcome
    problems = unmet_expectations(scenario, kernels[0].logs, halted=True)
    if halts not in outcome.detail:
        problems.insert(0, f"the scenario expected a halt mentioning {halts!r}")
    ok = not problems
    detail = f"{outcome.detail} (as expected)" if ok else f"{outcome.detail} ({'; '.join(problems)})"
    stop = "halted" if ok else "unexpected"
    return RunOutcome(ok, stop, detail, outcome.processes, outcome.instructions, outcome.frequency_hz, MODEL_FACTS)


def _inject(scenario: Scenario, kernel: Kernel) -> None:
    faults = ScriptedFaults()
    for injection in scenario.inject:
        injection.apply(faults)
    kernel.injector = faults


def scenarios() -> list[tuple[str, str]]:
    """(name, one-line description) of every built-in scenario."""
    return [(s.name, s.description) for s in builtin_scenarios()]


def input_files(scenario: str | None = None) -> list[Path]:
    """The files a run may read besides IMAGE and a scenario file: the committed boot images, the
    built-in scenarios, and the ELF files `scenario` names. The command line refuses an output that
    would overwrite one of them."""
    own: list[Path] = []
    if scenario is not None:
        with contextlib.suppress(ScenarioError):  # the run itself reports a bad scenario
            own = [image.path for image in load_scenario(scenario).images]
    return own + _shipped_files()


def _shipped_files() -> list[Path]:
    scenario_files = sorted((Path(__file__).resolve().parent / "scenarios").glob("*.toml"))
    try:
        images = fixtures_dir()
    except FileNotFoundError:
        return scenario_files  # the run itself reports the missing images
    return [images / image.filename for image in BOOT_IMAGES] + scenario_files


def _load_user_image(path: Path) -> ElfImage:
    try:
        return load_elf(path)
    except ElfError as exc:
        raise InputError(str(exc)) from None


def load_procd(path: Path) -> ElfImage:
    """A user's procd build (`--procd`): an ELF whose .erix_image note declares role PROCD."""
    image = _load_user_image(path)
    role = image_role(image)
    if role is not Role.PROCD:
        declared = "has no valid .erix_image note" if role is None else f"declares role {role.name}"
        raise InputError(f"{path}: not a procd image (it {declared}; procd's declares PROCD)")
    return image


def make_kernel(
    trace: Trace,
    procd_image: ElfImage | None = None,
    instrument: Instrument | None = None,
    images: tuple[UserImage, ...] = (),
    debugger: Debugger | None = None,
    recorder: DumpRecorder | None = None,
    cpu: CpuModel | None = None,
) -> Kernel:
    """A kernel whose CREATE_PROCESS loads the boot images, `procd_image` for procd if given, and
    a scenario's own ELF files (`images`) by their ids; `recorder` writes its crash dumps."""
    procd_id = boot_image_named("procd").image_id
    own = {image.image_id: image.image for image in images}
    if procd_image is not None:
        # A user's procd stands in for the boot image "procd": it is named so (in the trace, and
        # for scenario injections), wherever its file lies.
        procd_image = replace(procd_image, name="procd")

    def loader(image_id: int) -> ElfImage | None:
        if procd_image is not None and image_id == procd_id:
            return procd_image
        if image_id in own:
            return own[image_id]
        try:
            return load_boot_image(image_id)
        except KeyError:
            return None

    kernel = Kernel(trace, image_loader=loader, instrument=instrument, cpu_model=cpu)
    if debugger is not None:
        attach_debugger(kernel, debugger)
    if recorder is not None:
        recorder.attach(kernel)
    return kernel


def run_bootstrap(
    trace: Trace,
    max_instructions: int,
    *,
    manifest: tuple[ManifestEntry, ...] = DEFAULT_MANIFEST,
    procd_image: ElfImage | None = None,
    boot: ProcdBoot | None = None,
    on_ready: Callable[[Rootd], None] | None = None,
    instrument: Instrument | None = None,
    services: Services | None = None,
    extra_checks: Callable[[Kernel], list[str]] | None = None,
    prepare: Callable[[Kernel], None] | None = None,
    before_procd: tuple[Role, ...] = (),
    images: tuple[UserImage, ...] = (),
    debugger: Debugger | None = None,
    recorder: DumpRecorder | None = None,
    cpu: CpuModel | None = None,
) -> RunOutcome:
    """rootd boots procd and spawns `manifest` through it; the outcome says whether all went as expected.

    With `services`, rootd first starts named, timed and the interrupt notification, and hands
    procd capabilities to them for the test images.
    """
    kernel = make_kernel(trace, procd_image, instrument, images, debugger, recorder, cpu)
    if boot is None:
        boot = default_procd_boot(with_services=services is not None, started=before_procd)
    rootd = Rootd(kernel, list(manifest), boot, services, before_procd=before_procd)
    if prepare is not None:
        prepare(kernel)
    if on_ready is not None:
        rootd.on_ready.append(on_ready)
    rootd.start()
    stop = kernel.run(max_instructions)
    return _bootstrap_outcome(kernel, rootd, stop, extra_checks)


def _bootstrap_outcome(
    kernel: Kernel, rootd: Rootd, stop: StopReason, extra_checks: Callable[[Kernel], list[str]] | None = None
) -> RunOutcome:
    if stop.kind == "root-exited":
        halt = _bootstrap_halt(kernel)
        if halt is not None:
            return _outcome(kernel, False, "halted", halt)
    elif stop.kind != "idle":
        return _outcome(kernel, False, stop.kind, stop.detail)
    problems = list(rootd.problems)
    if extra_checks is not None:
        problems += extra_checks(kernel)
    if not rootd.finished and not problems:
        rootd_proc = kernel.procs[1]
        problems.append(f"rootd did not finish its manifest (it is {rootd_proc.state.value})")
    for record in rootd.spawned:
        if record.status.name != "OK":
            continue
        if record.entry.never_starts:
            if record.pid:
                problems.append(f"{_label(record.entry)} was started (pid {record.pid}), expected never to start")
            continue
        child = kernel.procs.get(record.pid)
        if child is None:
            problems.append(f"{record.entry.image}: procd reported pid {record.pid}, which does not exist")
            continue
        wrong = _unexpected_ending(child, record.entry)
        if wrong is not None:
            problems.append(f"{record.entry.image} (pid {record.pid}) {wrong}")
    if problems:
        return _outcome(kernel, False, "unexpected", "; ".join(problems))
    spawned = ", ".join(_spawn_summary(r) for r in rootd.spawned)
    return _outcome(kernel, True, "completed", f"bootstrap complete: procd spawned {spawned}")


def _bootstrap_halt(kernel: Kernel) -> str | None:
    """rootd's reason if it exited with BOOTSTRAP_HALTED: the last line it wrote (None: it did not)."""
    rootd = kernel.procs[ROOT_PID]
    if rootd.exit_code != RootdStatus.BOOTSTRAP_HALTED:
        return None
    return rootd.last_log or "bootstrap halted (rootd gave no reason)"


def run_alone(
    trace: Trace,
    image: ElfImage,
    max_instructions: int,
    instrument: Instrument | None = None,
    debugger: Debugger | None = None,
    recorder: DumpRecorder | None = None,
    cpu: CpuModel | None = None,
) -> RunOutcome:
    """Run `image` as the only process, with its own endpoint and a SEND-only kernel-control cap.

    The envelope names the role the image's .erix_image note declares, or GENERIC if it has none.
    """
    kernel, proc = prepare_alone(trace, image, instrument, debugger, recorder, cpu)
    stop = kernel.run(max_instructions)
    return alone_outcome(kernel, proc, stop)


def prepare_alone(
    trace: Trace,
    image: ElfImage,
    instrument: Instrument | None = None,
    debugger: Debugger | None = None,
    recorder: DumpRecorder | None = None,
    cpu: CpuModel | None = None,
) -> tuple[Kernel, Process]:
    """A kernel with `image` created and started as the root process, not yet run."""
    kernel = make_kernel(trace, instrument=instrument, debugger=debugger, recorder=recorder, cpu=cpu)
    endpoint = kernel.new_endpoint(image.name)
    caps = CapTable()
    caps.install(Capability(CapType.ENDPOINT, endpoint.obj, Rights.RECV), 1)
    caps.install(Capability(CapType.KERNEL_CONTROL, 0, Rights.SEND), 2)
    role = image_role(image) or Role.GENERIC
    envelope = build_envelope(
        role, 0, [EnvelopeSlot(1, CapPurpose.SELF_ENDPOINT), EnvelopeSlot(2, CapPurpose.KERNEL_CONTROL)]
    )
    try:
        proc = kernel.create_guest(Path(image.name).name, image, envelope, caps, endpoint.obj)
    except ImageLayoutError as exc:
        raise InputError(str(exc)) from None
    if not brings_own_stack(image):
        _give_stack(proc, image)
    kernel.make_root(proc)
    kernel.start(proc)
    return kernel, proc


LONE_STACK_TOP = 0x7FFF_FFFF_F000
"""End (exclusive) of the stack a lone image without an image note gets; the page above stays unmapped."""
LONE_STACK_SIZE = 1 << 20
"""1 MiB, read-write; the page below it stays unmapped, so an overflow faults there."""
LONE_ENTRY_WORDS = 6
"""What rsp points to at entry, as the SysV process entry expects: argc 0, argv's NULL, envp's
NULL, the auxiliary vector's AT_NULL pair, and one zero word that keeps rsp 16-byte aligned."""


def _give_stack(proc: Process, image: ElfImage) -> None:
    """Map a SysV-style stack for a plain static ELF (one without an .erix_image note)."""
    cpu = proc.cpu
    assert cpu is not None
    bottom = LONE_STACK_TOP - LONE_STACK_SIZE
    if any(segment.vaddr < LONE_STACK_TOP and bottom < segment.end for segment in image.segments):
        raise InputError(
            f"{image.name}: a segment overlaps the stack a lone image gets, [{bottom:#x}, {LONE_STACK_TOP:#x})"
        )
    cpu.map(bottom, LONE_STACK_SIZE, Perm.R | Perm.W)
    cpu.set_reg("rsp", LONE_STACK_TOP - 8 * LONE_ENTRY_WORDS)  # the words are zero: fresh pages


def alone_outcome(kernel: Kernel, proc: Process, stop: StopReason) -> RunOutcome:
    if stop.kind not in ("idle", "root-exited"):
        return _outcome(kernel, False, stop.kind, stop.detail)
    ending = _ending(proc)
    ok = proc.state is RunState.EXITED and proc.exit_code == 0
    stop_kind = "completed" if ok else ("deadlock" if proc.state is RunState.BLOCKED else proc.state.value)
    return _outcome(kernel, ok, stop_kind, f"{proc.name} {ending}")


def _spawn_summary(record: SpawnRecord) -> str:
    """How one manifest entry fared, for the summary line."""
    if record.status is not Status.OK:
        return f"{_label(record.entry)} refused ({record.status.name})"
    if not record.pid:
        return f"{_label(record.entry)} held (not started)"  # procd held it for its dependencies
    return f"{_label(record.entry)} as pid {record.pid}"


def _label(entry: ManifestEntry) -> str:
    """The image, and the role a stand-in image plays."""
    return f"{entry.role.name.lower()} ({entry.image})" if entry.image == FOUNDATION_IMAGE else entry.image


def _unexpected_ending(child: Process, entry: ManifestEntry) -> str | None:
    """What is wrong with how `child` ended, measured against its manifest entry (None: nothing)."""
    if entry.expect_fault is not None:
        if child.fault is None or child.fault.kind.value != entry.expect_fault:
            return f"{_ending(child)}, expected to fault ({entry.expect_fault})"
        return None
    if entry.expect_exit is None:
        return None if not child.state.is_dead else f"{_ending(child)}, expected to be alive"
    if child.state is not RunState.EXITED or child.exit_code != entry.expect_exit:
        return f"{_ending(child)}, expected exit {entry.expect_exit}"
    return None


def _ending(proc: Any) -> str:
    if proc.state is RunState.EXITED:
        return f"exited with code {proc.exit_code}"
    if proc.state is RunState.FAULTED and proc.fault is not None:
        return f"faulted: {proc.fault.describe()}"
    return f"is {proc.state.value}"


def _outcome(kernel: Kernel, ok: bool, stop: str, detail: str) -> RunOutcome:
    return RunOutcome(
        ok, stop, detail, describe_processes(kernel), kernel.icount, kernel.cpu_model.frequency_hz, MODEL_FACTS
    )


def describe_processes(kernel: Kernel) -> list[dict[str, Any]]:
    out = []
    for pid in sorted(kernel.procs):
        proc = kernel.procs[pid]
        row: dict[str, Any] = {"pid": pid, "name": proc.name, "state": proc.state.value}
        if proc.exit_code is not None:
            row["exit_code"] = proc.exit_code
        if proc.fault is not None:
            row["fault"] = proc.fault.kind.value
        if proc.cpu is not None:
            row["instructions"] = proc.cpu.retired
        out.append(row)
    forgotten = kernel.state.forgotten
    if forgotten.count:
        # a long run's oldest dead processes, no longer kept one by one (kernel/lifecycle.py)
        out.append(
            {
                "pid": 0,
                "name": "forgotten",
                "state": "forgotten",
                "count": forgotten.count,
                "instructions": forgotten.instructions,
            }
        )
    return out


def fuzz(request: FuzzRequest) -> int:
    """`python -m emu fuzz`: a campaign against procd (see procd_model/fuzz/run.py)."""
    from procd_model.fuzz.run import fuzz as run_campaign

    return run_campaign(request)


def replay_failure(path: Path) -> tuple[bool, str]:
    """`python -m emu replay FILE` for a fuzz replay file: whether its failure reproduces (the
    same key), and what happened, for people. Raises InputError for a bad file."""
    from procd_model.fuzz.replayfile import ReplayFileError, read_replay, replay

    try:
        recorded = read_replay(path)
        now = replay(recorded)
    except ReplayFileError as exc:
        raise InputError(str(exc)) from None
    if now is None:
        return False, f"emu: replay: {path}: NOT reproduced: the {len(recorded.steps)} steps pass now ({recorded.key})"
    if now.key != recorded.key:
        return False, f"emu: replay: {path}: NOT reproduced: another failure: {now.key}: {now}"
    return True, f"emu: replay: {path}: reproduced {now.key}: {now}"
