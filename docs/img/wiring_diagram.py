"""Draws docs/img/wiring.png, the door wiring of docs/hardware.md (default pins of edge.config.DoorConfig).

Regenerate after changing a default pin:  ./run python docs/img/wiring_diagram.py
Not part of any package (nothing imports it); it is the source of the picture.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=True)
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle  # noqa: E402

OUT = Path(__file__).with_name("wiring.png")
POWER, GROUND, LOCK = "#d62728", "#222222", "#ff7f0e"

# One row per device: its header pins (physical pin, name, wire colour, terminal), the box title and notes.
DEVICES = [
    ([(2, "5V", POWER, "VCC"), (6, "GND", GROUND, "GND"), (11, "BCM 17", "#1f77b4", "IN")],
     "Relay module", ["5 V coil, opto-isol.", "active-low board:", "relay_active_high:", "  false"]),
    ([(1, "3V3", POWER, "VCC"), (9, "GND", GROUND, "GND"), (13, "BCM 27", "#9467bd", "IN")],
     "Buzzer module", ["active buzzer with", "its own transistor"]),
    ([(15, "BCM 22", "#2ca02c", "330 R -> anode"), (14, "GND", GROUND, "cathode")],
     "Green LED", ["granted"]),
    ([(16, "BCM 23", "#d62728", "330 R -> anode"), (20, "GND", GROUND, "cathode")],
     "Red LED", ["denied, alarms"]),
    ([(29, "BCM 5", "#17becf", "switch"), (30, "GND", GROUND, "switch")],
     "Exit button", ["push to exit (NO)", "exit_contact: no"]),
    ([(31, "BCM 6", "#8c564b", "switch"), (34, "GND", GROUND, "switch")],
     "Door contact", ["reed, closed while shut", "contact_type: nc"]),
    ([(33, "BCM 13", "#e377c2", "switch"), (39, "GND", GROUND, "switch")],
     "Tamper switch", ["closed while lid shut", "tamper_contact: nc"]),
]
USED = {pin: colour for pins, _t, _n in DEVICES for pin, _name, colour, _term in pins}


def rounded(ax, x, y, w, h, face, edge="#333"):  # noqa: ANN001, ANN201
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=face, ec=edge, lw=1.4))


def header_map(ax) -> None:  # noqa: ANN001
    """The 2 x 20 header seen from above, USB/Ethernet end at the bottom; used pins numbered and coloured."""
    x0, top, step = 0.35, 15.3, 0.66
    ax.add_patch(Rectangle((x0 - 0.3, top - 19 * step - 0.45), 1.9, 19 * step + 0.9, fc="#e8f1e8", ec="#2d5a2d", lw=1.5))
    ax.text(x0 - 0.3, top + 0.95, "Pi 4 / 5 header, seen from above\n(board edge on the right, SD-card end up)", fontsize=10, weight="bold", va="center")
    for row in range(20):
        for col in range(2):
            pin = row * 2 + col + 1
            x, y = x0 + col * 1.3, top - row * step
            colour = USED.get(pin)
            ax.add_patch(Circle((x, y), 0.2, fc=colour or "white", ec="black", lw=0.8))
            if colour:
                ax.text(x + (-0.3 if col == 0 else 0.3), y, str(pin), fontsize=8.5, va="center",
                        ha="right" if col == 0 else "left", weight="bold")


def main() -> None:
    fig, ax = plt.subplots(figsize=(16, 11.5), dpi=100)
    ax.set_xlim(0, 21.3)
    ax.set_ylim(0, 17.4)
    ax.axis("off")
    ax.text(0.05, 17.1, "Waystation door wiring: default pins (BCM numbers go in the config; physical pin numbers "
            "on the header)", fontsize=14.5, weight="bold")
    header_map(ax)

    row_top, row_gap = 15.6, 2.15
    bx, bw = 9.0, 4.7  # device boxes
    relay_top = row_top
    top = row_top + row_gap
    height = 0.0
    for pins, title, notes in DEVICES:
        top -= max(row_gap, height + 0.45)
        height = 0.5 + 0.42 * max(len(pins), len(notes))
        # The pins of this device, as a small table.
        rounded(ax, 3.3, top - height, 2.6, height, "#e8f1e8", "#2d5a2d")
        rounded(ax, bx, top - height, bw, height, "#f4f4f4")
        ax.text(bx + 0.15, top - 0.3, title, fontsize=12, weight="bold", va="center")
        for k, note in enumerate(notes):
            ax.text(bx + 1.95, top - 0.72 - k * 0.4, note, fontsize=9.5, va="center", color="#333")
        for j, (pin, name, colour, terminal) in enumerate(pins):
            y = top - 0.72 - j * 0.42
            ax.text(3.45, y, f"pin {pin:>2}", fontsize=10, va="center", family="monospace")
            ax.text(4.55, y, name, fontsize=10.5, va="center", weight="bold", color=colour if name != "GND" else "black")
            ax.plot([5.9, bx], [y, y], color=colour, lw=2.6, solid_capstyle="round")
            ax.plot([bx], [y], "o", color=colour, ms=6)
            ax.text(bx + 0.15, y, terminal, fontsize=9.5, va="center", color=colour if colour != GROUND else "black")

    # The lock circuit beside the relay: 12 V supply + -> COM, NO -> lock +, lock - -> supply 0 V.
    top = relay_top
    right = bx + bw
    terminals = {"COM": top - 0.72, "NO": top - 1.14, "NC": top - 1.56}
    for name, y in terminals.items():
        ax.text(right + 0.12, y + 0.04, name, fontsize=8.5, va="bottom", ha="left", weight="bold")
        ax.plot([right], [y], "o", color=LOCK if name != "NC" else "#999", ms=6)
    lx, lw_ = 15.6, 4.6
    rounded(ax, lx, top - 1.05, lw_, 1.15, "#fff3e0")
    ax.text(lx + 0.15, top - 0.3, "12 V lock supply", fontsize=12, weight="bold", va="center")
    ax.text(lx + 0.15, top - 0.75, "separate from the Pi's 5 V supply", fontsize=9.5, va="center")
    strike_top = top - 1.7
    rounded(ax, lx, strike_top - 2.35, lw_, 2.35, "#fff3e0")
    ax.text(lx + 0.15, strike_top - 0.3, "12 V electric strike", fontsize=12, weight="bold", va="center")
    for k, note in enumerate(["fail-secure: locked without power", "flyback diode across the coil",
                              "(1N4007, stripe to +)", "fail_safe: see the table below"]):
        ax.text(lx + 0.15, strike_top - 0.75 - k * 0.4, note, fontsize=9.3, va="center", color="#333")
    ax.plot([right, 14.6, 14.6, lx], [terminals["COM"], terminals["COM"], top - 0.5, top - 0.5], color=LOCK, lw=2.6)
    ax.text(14.7, top - 0.42, "+12 V", fontsize=9, color=LOCK, va="bottom")
    ax.plot([right, 15.0, 15.0, lx], [terminals["NO"], terminals["NO"], strike_top - 0.75, strike_top - 0.75],
            color=LOCK, lw=2.6)
    ax.text(15.08, strike_top - 1.2, "lock +", fontsize=9, color=LOCK, rotation=90, va="center")
    ax.plot([lx + lw_, 20.6, 20.6, lx + lw_], [top - 0.75, top - 0.75, strike_top - 1.6, strike_top - 1.6],
            color=GROUND, lw=2.6)
    ax.text(20.75, strike_top - 0.4, "0 V to lock -", fontsize=9, rotation=90, va="center")

    ax.text(14.6, 8.6, "Inputs: each is a switch between its pin and GND,\nwith the Pi's internal pull-up, so a closed "
            "switch\nreads low. nc = closed in the normal state: a cut\nwire then reads as door open / tampered.\n"
            "Long runs to the door: use an opto-isolated\ninput board, or at least twisted pair.",
            fontsize=10, va="top", color="#222")
    ax.text(14.6, 4.7, "Never drive a lock coil, buzzer or relay coil\nstraight from a GPIO pin (3.3 V, ~16 mA max).",
            fontsize=10, va="top", color="#7a0000", weight="bold")
    fig.savefig(OUT, bbox_inches="tight", facecolor="white")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
