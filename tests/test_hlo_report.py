"""jaxstage.hlo_report: counts read off hand-written HLO and PTX, and off CPU programs."""

import jax
import jax.numpy as jnp
import pytest

from jaxstage import hlo_report as hr

# A module with every construct the counts look at: an entry with a copy, a loop of known
# trip count 10 around a fusion and a loop of unknown trip count (1 fusion a body, 1 a
# condition), a conditional whose branches have 1 and 2 kernels, a host callback.
MODULE = """HloModule jit_example, is_scheduled=true

FileNames
1 "/tmp/example.py"

%fused_inner (param_0: f32[64]) -> f32[64] {
  %param_0 = f32[64]{0} parameter(0)
  ROOT %negate.1 = f32[64]{0} negate(%param_0)
}

%inner_body (arg.1: (s32[], f32[64])) -> (s32[], f32[64]) {
  %arg.1 = (s32[], f32[64]{0}) parameter(0)
  %gte.1 = f32[64]{0} get-tuple-element(%arg.1), index=1
  %gte.2 = s32[] get-tuple-element(%arg.1), index=0
  %inner = f32[64]{0} fusion(%gte.1), kind=kLoop, calls=%fused_inner
  ROOT %tuple.1 = (s32[], f32[64]{0}) tuple(%gte.2, %inner)
}

%fused_test (param_0.1: s32[]) -> pred[] {
  %param_0.1 = s32[] parameter(0)
  %constant.1 = s32[] constant(3)
  ROOT %compare.1 = pred[] compare(%param_0.1, %constant.1), direction=LT
}

%inner_cond (arg.2: (s32[], f32[64])) -> pred[] {
  %arg.2 = (s32[], f32[64]{0}) parameter(0)
  %gte.3 = s32[] get-tuple-element(%arg.2), index=0
  ROOT %test = pred[] fusion(%gte.3), kind=kLoop, calls=%fused_test
}

%fused_update (param_0.2: f32[1000,64], param_1.1: f32[64], param_2.1: s32[]) -> f32[1000,64] {
  %param_0.2 = f32[1000,64]{1,0} parameter(0)
  %param_1.1 = f32[64]{0} parameter(1)
  %bitcast.1 = f32[1,64]{1,0} bitcast(%param_1.1)
  %param_2.1 = s32[] parameter(2)
  %constant.2 = s32[] constant(0)
  ROOT %dus.1 = f32[1000,64]{1,0} dynamic-update-slice(%param_0.2, %bitcast.1, %param_2.1, %constant.2)
}

%fused_read (param_0.3: f32[1000,64], param_1.2: s32[]) -> f32[1,64] {
  %param_0.3 = f32[1000,64]{1,0} parameter(0)
  %param_1.2 = s32[] parameter(1)
  %constant.3 = s32[] constant(0)
  ROOT %ds.1 = f32[1,64]{1,0} dynamic-slice(%param_0.3, %param_1.2, %constant.3), dynamic_slice_sizes={1,64}
}

%outer_body (arg.3: (s32[], f32[64], f32[1000,64])) -> (s32[], f32[64], f32[1000,64]) {
  %arg.3 = (s32[], f32[64]{0}, f32[1000,64]{1,0}) parameter(0)
  %gte.4 = s32[] get-tuple-element(%arg.3), index=0
  %gte.5 = f32[64]{0} get-tuple-element(%arg.3), index=1
  %gte.6 = f32[1000,64]{1,0} get-tuple-element(%arg.3), index=2
  %update = f32[1000,64]{1,0} fusion(%gte.6, %gte.5, %gte.4), kind=kLoop, calls=%fused_update
  %read = f32[1,64]{1,0} fusion(%update, %gte.4), kind=kLoop, calls=%fused_read
  %start = (s32[], f32[64]{0}) tuple(%gte.4, %gte.5)
  %loop = (s32[], f32[64]{0}) while(%start), condition=%inner_cond, body=%inner_body, metadata={op_name="jit(example)/while/body/while"}
  %gte.7 = f32[64]{0} get-tuple-element(%loop), index=1
  ROOT %tuple.2 = (s32[], f32[64]{0}, f32[1000,64]{1,0}) tuple(%gte.4, %gte.7, %update)
}

%outer_cond (arg.4: (s32[], f32[64], f32[1000,64])) -> pred[] {
  %arg.4 = (s32[], f32[64]{0}, f32[1000,64]{1,0}) parameter(0)
  %gte.8 = s32[] get-tuple-element(%arg.4), index=0
  ROOT %test.2 = pred[] fusion(%gte.8), kind=kLoop, calls=%fused_test
}

%branch_one (p.1: (f32[64])) -> (f32[64]) {
  %p.1 = (f32[64]{0}) parameter(0)
  %gte.9 = f32[64]{0} get-tuple-element(%p.1), index=0
  %one = f32[64]{0} fusion(%gte.9), kind=kLoop, calls=%fused_inner
  ROOT %tuple.3 = (f32[64]{0}) tuple(%one)
}

%branch_two (p.2: (f32[64])) -> (f32[64]) {
  %p.2 = (f32[64]{0}) parameter(0)
  %gte.10 = f32[64]{0} get-tuple-element(%p.2), index=0
  %two.a = f32[64]{0} fusion(%gte.10), kind=kLoop, calls=%fused_inner
  %two.b = f32[64]{0} fusion(%two.a), kind=kLoop, calls=%fused_inner
  ROOT %tuple.4 = (f32[64]{0}) tuple(%two.b)
}

ENTRY %main.1 (x: f32[64], buffer: f32[1000,64], i: s32[]) -> f32[64] {
  %x = f32[64]{0} parameter(0)
  %buffer = f32[1000,64]{1,0} parameter(1)
  %i = s32[] parameter(2)
  %copy.1 = f32[64]{0} copy(%x)
  %start.2 = (s32[], f32[64]{0}, f32[1000,64]{1,0}) tuple(%i, %copy.1, %buffer)
  %outer = (s32[], f32[64]{0}, f32[1000,64]{1,0}) while(%start.2), condition=%outer_cond, body=%outer_body, metadata={op_name="jit(example)/while"}, backend_config={"known_trip_count":{"n":"10"},"known_init_step":{"init":"0","step":"1"}}
  %gte.11 = f32[64]{0} get-tuple-element(%outer), index=1
  %operand = (f32[64]{0}) tuple(%gte.11)
  %cond = (f32[64]{0}) conditional(%i, %operand, %operand), branch_computations={%branch_one, %branch_two}
  %gte.12 = f32[64]{0} get-tuple-element(%cond), index=0
  ROOT %callback = f32[64]{0} custom-call(%gte.12), custom_call_target="xla_ffi_python_gpu_callback", api_version=API_VERSION_TYPED_FFI
}
"""  # noqa: E501 (HLO instructions are one line each)


def test_parse_finds_every_computation_and_the_entry():
    computations, entry = hr.parse_hlo(MODULE)
    assert entry == "main.1"
    assert len(computations) == 11
    outer = computations["main.1"].by_name()["outer"]
    assert outer.opcode == "while" and outer.trip_count == 10
    assert outer.called == ("outer_cond", "outer_body")
    assert computations["main.1"].by_name()["cond"].called == ("branch_one", "branch_two")
    assert outer.op_name == "jit(example)/while"


def test_kernels_loops_conditionals_and_callbacks_by_hand():
    counts = hr.hlo_counts(MODULE)
    # Entry: copy + callback = 2. Outer loop, 10 iterations, condition never run: update
    # + read + inner loop (1 iteration assumed: body 1, condition run twice) = 5 each.
    # Conditional: its heavier branch, 2.
    assert counts.kernels == 2 + 10 * 5 + 2
    assert counts.kernels_by_kind == {"copy": 1, "custom-call": 1, "fusion": 52}
    assert (counts.loops_known, counts.loops_unknown) == (1, 1)
    assert (counts.conditionals, counts.conditionals_run) == (1, 1)
    assert counts.host_callbacks == 1
    assert counts.host_callback_targets == ("xla_ffi_python_gpu_callback",)
    # Host syncs: the inner predicate twice per outer iteration, the branch index, the
    # callback.
    assert counts.host_syncs == 10 * 2 + 1 + 1
    outer, inner = counts.loops
    assert (outer.trip_count, outer.kernels_per_iteration, outer.calls) == (10, 5, 1)
    assert (inner.trip_count, inner.kernels_per_iteration, inner.calls) == (None, 2, 10)
    assert inner.op_name == "jit(example)/while/body/while"


def test_unknown_trip_count_scales_the_loop_body_and_condition():
    once, thrice = hr.hlo_counts(MODULE), hr.hlo_counts(MODULE, unknown_trip_count=3)
    # Per outer iteration: 2 more bodies and 2 more conditions.
    assert thrice.kernels - once.kernels == 10 * (2 * 1 + 2 * 1)
    assert thrice.host_syncs - once.host_syncs == 10 * 2
    assert thrice.unknown_trip_count == 3


def test_bytes_of_in_place_updates_and_slices():
    counts = hr.hlo_counts(MODULE)
    row, buffer = 64 * 4, 1000 * 64 * 4
    update = row + 4 + row  # reads the row and the index, writes the row: not the buffer
    read = row + 4 + row  # reads a slice of the buffer, writes it
    inner = 2 * row  # negate: reads and writes a row
    test = 4 + 1  # compare: an s32 read, a pred written
    per_outer = update + read + inner + 2 * test
    copy = 2 * row
    callback = 2 * row
    conditional = 2 * inner
    expected = copy + 10 * per_outer + conditional + callback
    assert counts.bytes_accessed == expected
    assert expected < buffer  # the 256 kB buffer is never counted whole


def test_shape_bytes():
    assert hr.shape_bytes("f32[1000,64]{1,0}") == 256_000
    assert hr.shape_bytes("(s32[], pred[8]{0}, /*index=2*/s8[3]{0})") == 4 + 8 + 3
    assert hr.shape_bytes("bf16[2,2]") == 8
    assert hr.shape_bytes("token[]") == 0


def test_no_entry_is_an_error():
    with pytest.raises(ValueError, match="ENTRY"):
        hr.parse_hlo("HloModule m\n")


PTX = """
//
// Generated by LLVM NVPTX Back-End
//
.version 8.4
.target sm_90a
.visible .entry loop_scatter_fusion(
    .param .u64 loop_scatter_fusion_param_0
)
{
    // atom.global.add.f32 in a comment is not an instruction
    atom.global.add.u32     %r5, [%rd4], 1;
    @%p1 atom.global.add.u32     %r6, [%rd4], 1;
    @!%p2 red.global.add.f32     [%rd5], %f1;
    atom.relaxed.gpu.global.add.f32 %f2, [%rd6], %f3;
    atom.global.cas.b32     %r7, [%rd7], %r8, %r9;
    atom.shared.max.s32     %r10, [%r11], %r12;
    cvt.rna.tf32.f32        %r13, %f4;
    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f5, %f6, %f7, %f8}, {%r1, %r2}, {%r3}, {%f9, %f10, %f11, %f12};
    add.f32                 %f13, %f14, %f15;
    ret;
}
"""  # noqa: E501


def test_ptx_atomics_by_type_and_tf32():
    counts = hr.ptx_counts([PTX, PTX])
    assert counts.files == 2
    assert counts.atomics == {
        "atom.global.add.u32": 4,
        "red.global.add.f32": 2,
        "atom.relaxed.gpu.global.add.f32": 2,
        "atom.global.cas.b32": 2,
        "atom.shared.max.s32": 2,
    }
    assert counts.float_atomics == {"red.global.add.f32": 2, "atom.relaxed.gpu.global.add.f32": 2}
    assert counts.cas_atomics == 2
    assert counts.tf32_instructions == 4  # the cvt and the mma, twice
    assert counts.mma_instructions == 2
    record = counts.as_dict()
    assert record["float_atomics"] and record["tf32_instructions"] == 4


def test_ptx_without_atomics():
    counts = hr.ptx_counts(["add.s32 %r1, %r2, %r3;\nst.global.u32 [%rd1], %r1;\n"])
    assert not counts.atomics and not counts.float_atomics and counts.tf32_instructions == 0


def test_estimate_is_the_documented_formula():
    model = hr.CostModel(
        "toy", launch_s=1e-6, host_sync_s=1e-5, bytes_per_s=1e9, operations_per_s=1e10
    )
    memory_bound = hr.estimate(10, 2, 1e6, 1e6, 1e6, model)
    assert memory_bound["seconds_per_stage"] == pytest.approx(10e-6 + 2e-5 + 1e-3)
    assert memory_bound["agent_rounds_per_second"] == pytest.approx(1e6 / (1e-5 + 2e-5 + 1e-3))
    compute_bound = hr.estimate(0, 0, 1e3, 1e8, 1.0, model)
    assert compute_bound["seconds_per_stage"] == pytest.approx(1e-2)
    assert hr.H200.bytes_per_s == 4.8e12 and hr.H200.launch_s == 2e-6


def fixed_loop(trips):
    def f(x):
        return jax.lax.fori_loop(0, trips, lambda i, x: jnp.sin(x) * 2.0 + i, x)

    return jax.jit(f).lower(jnp.zeros(1024)).compile().as_text()


def test_a_cpu_program_loop_multiplies_its_body_by_the_trip_count():
    """The same loop at 3 and 10 iterations: 7 bodies' kernels apart, and read as one
    loop of that known trip count (XLA's CPU backend annotates it as a GPU's does)."""
    three, ten = hr.hlo_counts(fixed_loop(3)), hr.hlo_counts(fixed_loop(10))
    assert (three.loops_known, three.loops_unknown, three.conditionals) == (1, 0, 0)
    assert [loop.trip_count for loop in ten.loops] == [10]
    per_iteration = ten.loops[0].kernels_per_iteration
    assert per_iteration >= 1
    assert ten.kernels - three.kernels == 7 * per_iteration
    assert ten.host_syncs == 0
    # The body reads and writes the 4 kB carry at least once per iteration.
    assert ten.bytes_accessed - three.bytes_accessed >= 7 * 2 * 4096


def test_a_cpu_program_with_a_while_and_a_cond():
    def f(x, n):
        x = jax.lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, jnp.cos(c[1])), (0, x))
        return jax.lax.cond(n > 3, lambda v: v + 1, lambda v: v * 3, x[1])

    text = jax.jit(f).lower(jnp.zeros(1024), 5).compile().as_text()
    counts = hr.hlo_counts(text)
    assert (counts.loops_known, counts.loops_unknown) == (0, 1)
    assert (counts.conditionals, counts.host_callbacks) == (1, 0)
    (loop,) = counts.loops
    assert loop.trip_count is None
    # One iteration assumed: the predicate to the host twice, the branch index once.
    assert counts.host_syncs == 3
    more = hr.hlo_counts(text, unknown_trip_count=5)
    assert more.kernels - counts.kernels == 4 * loop.kernels_per_iteration


def test_a_cpu_program_with_a_host_callback():
    def f(x):
        y = jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        return y + 1

    text = jax.jit(f).lower(jnp.zeros(8)).compile().as_text()
    counts = hr.hlo_counts(text)
    assert counts.host_callbacks == 1
    assert "callback" in counts.host_callback_targets[0]
