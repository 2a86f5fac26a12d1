"""``train.mixed_precision = auto``: what it picks on which hardware."""

from ssad.precision import cpu_flags, resolve_precision


def test_auto_picks_bf16_only_where_the_hardware_has_it():
    assert resolve_precision("auto", {"avx2", "avx512_bf16"}, gpus=[])[0] == "bf16"
    assert resolve_precision("auto", {"amx_bf16", "amx_tile"}, gpus=[])[0] == "bf16"
    assert resolve_precision("auto", {"avx2", "avx512f"}, gpus=[])[0] == "none"
    assert resolve_precision("auto", set(), gpus=[(8, 0)])[0] == "bf16"
    assert resolve_precision("auto", set(), gpus=[(7, 5)])[0] == "fp16"
    assert resolve_precision("auto", set(), gpus=[(9, 0), (7, 0)])[0] == "fp16"
    assert resolve_precision("none", {"amx_bf16"}, gpus=[]) == ("none", "as configured")


def test_cpu_flags_are_read_from_cpuinfo_text():
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbogomips\t: 1\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("nothing here") == set()
