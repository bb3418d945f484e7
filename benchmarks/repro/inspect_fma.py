"""Evidence for the mechanism behind maxpool_second_order.py (XLA:CPU, x86_64).

Compiles the part-1 case of maxpool_second_order.py (or, with `maml`, case (a) of
part 2) with `--xla_dump_to`, then lists, per fusion of the optimized HLO entry
computation: whether it evaluates the reduce_max, the `compare(..., direction=EQ)` of
JAX's max JVP, how it computes the max's operand (the algsimp-rewritten
`x - sum * 0.05`-style mean subtraction), and which floating-point instructions its
compiled kernel contains (objdump): fused multiply-adds (vfmadd/vfnmadd/vfmsub/vfnmsub)
versus separate multiplies and subtractions.

    python inspect_fma.py [core|maml] [--keep DIR] [--isa AVX] [--o0]

Needs binutils' objdump for the instruction counts.
"""
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    which = "maml" if "maml" in sys.argv[1:] else "core"
    keep = sys.argv[sys.argv.index("--keep") + 1] if "--keep" in sys.argv else None
    extra = ""
    if "--isa" in sys.argv:
        extra += f" --xla_cpu_max_isa={sys.argv[sys.argv.index('--isa') + 1]}"
    if "--o0" in sys.argv:
        extra += " --xla_backend_optimization_level=0"
    dump = keep or tempfile.mkdtemp(prefix="maxpool_dump_")
    shutil.rmtree(dump, ignore_errors=True)
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import maxpool_second_order as m, "
            "jax.numpy as jnp; "
            + ("m.core_grad('max', jnp.float32)" if which == "core"
               else "m.maml_grad('max', m.STEPS, jnp.float32)"))
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump} --xla_dump_hlo_as_text" + extra)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)

    # The largest optimized module is the gradient (the rest are tiny converts).
    cands = [f for f in os.listdir(dump) if f.endswith("cpu_after_optimizations.txt")]
    hlo_file = max(cands, key=lambda f: os.path.getsize(os.path.join(dump, f)))
    prefix = hlo_file[: -len("cpu_after_optimizations.txt")]
    text = open(os.path.join(dump, hlo_file)).read()
    print(f"optimized HLO: {os.path.join(dump, hlo_file)}")

    # fused computation bodies by name
    bodies = {}
    for m in re.finditer(r"^%(\S+) \(.*?\) -> .*? \{\n(.*?)^\}", text, re.S | re.M):
        bodies[m.group(1)] = m.group(2)
    entry = text[text.index("\nENTRY"):]
    objdump = shutil.which("objdump")
    if not objdump:
        print("(objdump not found: no instruction counts)")
    fp = re.compile(r"\b(v?f(?:n?m(?:add|sub))\w*|v(?:mul|sub|add|div|max|cmp\w*)[ps][sd])\b")
    print(f"{'fusion':34s} {'reduce_max':10s} {'EQ-compare':10s} mean-subtraction  instructions")
    for m in re.finditer(r"%(\S+) = \S+ fusion\(.*?calls=%(\S+?),", entry):
        name, comp = m.group(1), m.group(2)
        body = bodies.get(comp, "")
        has_max = bool(re.search(r" reduce\(.*jvp\(\)/reduce_max", body))
        has_eq = "direction=EQ" in body
        mean_sub = []
        if re.search(r"multiply\([^)]*\).*jvp\(\)/div", body):
            mean_sub.append("mul-by-reciprocal")
        if re.search(r"divide\([^)]*\).*jvp\(\)/div", body):
            mean_sub.append("divide")
        counts = ""
        obj = os.path.join(dump, f"{prefix}obj-file.{name}_kernel_module.o")
        if objdump and os.path.exists(obj):
            asm = subprocess.run([objdump, "-d", "--no-show-raw-insn", obj],
                                 capture_output=True, text=True, check=False).stdout
            c = collections.Counter(fp.findall(asm))
            counts = " ".join(f"{k}:{v}" for k, v in sorted(c.items()))
        if has_max or has_eq:
            print(f"{name:34s} {has_max!s:10s} {has_eq!s:10s} "
                  f"{','.join(mean_sub) or '-':17s} {counts}")
    if not keep:
        shutil.rmtree(dump, ignore_errors=True)


if __name__ == "__main__":
    main()
