"""A model of how an epoch on the packed GEMM speeds up with threads (docs/design.md, "Threads").

This machine has two cores, so speed-ups beyond two threads cannot be measured here; this
model predicts them from the way the engine divides each product (csrc/fd_packed.c) and from
four rates measured on this machine (docs/benchmarks.md, 17:23 UTC):

- R:  one core's micro-kernel rate, FLOP/s (the 12 x 32 tile alone on a core, operands in L2),
  times BUSY when other cores run it too (two together ran 3% slower each: clocks, shared L3);
- BW: one core's copy rate from the shared L3 cache, bytes/s (packing: read plus write);
- ADAM: one core's Adam update time per parameter, s (bound by the divider, not by memory);
- HANDOFF: the cost of one job hand-off while the workers spin, s.

Per training step and dense layer (fan-in a, fan-out b, batch n), the products are: forward
(n x a x b), weight gradient (a x n x b) and, past the first layer, input gradient (n x b x a).
A product's rows are cut into micro-panels of 12, spread evenly over P parts, P = min(threads,
micro-panels, multiply-adds / 2^19). Each part packs its rows of op(A) and, for each block of
120 of them, streams every panel of op(B) from L3 (a block takes the longer of its arithmetic
and that stream); op(B) is packed once, shared, unless a step already left it as panels (the
deltas of relu layers, and the weights under Adam). Adam's pass is cut into 8192-float blocks. What the model leaves out (the
loss, softmax, Python, page faults) is taken as serial: the measured one-thread epoch minus the
model's, when positive. The table shows the model beside the two measured thread counts.

Usage: python tools/scaling_model.py   (prints the table docs/design.md quotes)
"""
import math

R = 235e9
BUSY = 0.97
BW = 17e9
ADAM = 0.47e-9
HANDOFF = 3e-6
MR = 12   # rows of a micro-panel
MC = 120  # rows of a block (FD_PACK_MC)

# name: (widths, batch, rows per epoch, optimizer, measured one-thread and two-thread epochs (s))
SHAPES = {
    "784-512-512-10 adam b256": ([784, 512, 512, 10], 256, 24000, "adam", 0.448, 0.256),
    "784-1024-1024-10 sgd b1024": ([784, 1024, 1024, 10], 1024, 24000, "sgd", 1.106, 0.594),
}


def product_time(rows, depth, cols, threads, b_packed):
    """Seconds for one packed product with `threads` threads (see the module docstring)."""
    rate = R * (BUSY if threads > 1 else 1.0)
    units = math.ceil(rows / MR)
    parts = max(1, min(threads, units, (rows * depth * cols) >> 19))
    part_rows = min(rows, math.ceil(units / parts) * MR)
    stream_b = 4.0 * depth * cols / BW
    blocks = sum(max(2.0 * min(MC, part_rows - r) * depth * cols / rate, stream_b)
                 for r in range(0, part_rows, MC))
    pack_a = 8.0 * part_rows * depth / BW
    pack_b = 0.0 if b_packed else 8.0 * depth * cols / BW / min(parts, math.ceil(cols / 32))
    return pack_b + pack_a + blocks + (HANDOFF if parts > 1 else 0.0)


def step_time(widths, batch, optimizer, threads):
    t, params = 0.0, 0
    for layer, (a, b) in enumerate(zip(widths, widths[1:])):
        relu_delta = layer < len(widths) - 2  # a hidden relu layer's delta arrives as panels
        t += product_time(batch, a, b, threads, b_packed=optimizer != "sgd")
        t += product_time(a, batch, b, threads, b_packed=relu_delta)
        if layer > 0:
            t += product_time(batch, b, a, threads, b_packed=False)
        params += a * b + b
    if optimizer == "adam":
        t += params * ADAM / min(threads, math.ceil(params / 8192)) + HANDOFF
    return t


def main():
    counts = (2, 4, 16, 64)
    print("| shape | epoch, 1 / 2 threads: model (measured) | " +
          " | ".join(f"speed-up at {n}" for n in counts) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in counts) + " |")
    for name, (widths, batch, rows, opt, one, two) in SHAPES.items():
        steps = math.ceil(rows / batch)
        serial = max(0.0, one - steps * step_time(widths, batch, opt, 1))
        epoch = {n: serial + steps * step_time(widths, batch, opt, n) for n in (1,) + counts}
        print(f"| {name} | {epoch[1]:.3f} ({one:.3f}) / {epoch[2]:.3f} ({two:.3f}) s | " +
              " | ".join(f"{epoch[1] / epoch[n]:.1f}x" for n in counts) + " |")


if __name__ == "__main__":
    main()
