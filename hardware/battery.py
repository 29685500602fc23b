"""Battery chemistries and their arithmetic: voltage vs charge, usable energy, faults.

Pure functions and frozen data, no I/O. The simulated solar site uses them
to behave like a battery; the edge agent uses the same curves to estimate the
state of charge from a voltage (INA219 boards have no fuel gauge), to turn
charge into hours of autonomy, and to spot a failing battery.

Two chemistries cover Pakistan's solar street furniture:

- ``lifepo4``: 4 cells in series (12.8 V nominal); a flat curve, so voltage
  says little between 20 % and 90 % and a BMS or coulomb counting is what
  knows the charge; usable down to 10 %.
- ``lead_acid``: 6 cells (12 V nominal, sealed AGM/gel); a sloping curve;
  usable only down to 50 % if it is to last more than a season, and it loses
  capacity in the cold.

Voltages are for a 12 V-class bank; ``cells`` scales them for 24 V or 48 V.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CHEMISTRIES",
    "Chemistry",
    "ChemistryName",
    "autonomy_hours",
    "capacity_factor",
    "reserve_fraction",
    "sag_resistance_ohm",
]

ChemistryName = Literal["lifepo4", "lead_acid"]


@dataclass(frozen=True)
class Chemistry:
    """What the node needs to know about a battery type."""

    name: ChemistryName
    cells: int
    cell_curve: tuple[tuple[float, float], ...]  # (state of charge, open-circuit cell volts)
    resistance_ohm_ah: float  # internal resistance × capacity (Ω·Ah) of a healthy bank
    min_soc: float  # below this the charge is not usable (BMS cut-off or lifetime)
    charge_efficiency: float  # energy stored per energy offered
    max_temp_c: float  # above this the battery is cooking: a fault
    cold_derating_per_c: float  # capacity lost per °C below 25 °C

    @property
    def nominal_v(self) -> float:
        return self.open_circuit_v(0.5)

    def open_circuit_v(self, soc: float, *, cells: int | None = None) -> float:
        """Resting bank voltage at state of charge `soc` (0..1), linear between points."""
        soc = min(1.0, max(0.0, soc))
        socs = [p[0] for p in self.cell_curve]
        i = bisect.bisect_left(socs, soc)
        if i == 0:
            cell = self.cell_curve[0][1]
        elif i >= len(socs):
            cell = self.cell_curve[-1][1]
        else:
            (s0, v0), (s1, v1) = self.cell_curve[i - 1], self.cell_curve[i]
            cell = v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
        return cell * (cells or self.cells)

    def soc_from_voltage(self, volts: float, *, cells: int | None = None) -> float:
        """The state of charge a resting bank at `volts` is at (inverse of the curve)."""
        cell = volts / (cells or self.cells)
        points = self.cell_curve
        if cell <= points[0][1]:
            return points[0][0]
        for (s0, v0), (s1, v1) in itertools.pairwise(points):
            if cell <= v1:
                return s0 + (s1 - s0) * (cell - v0) / (v1 - v0) if v1 > v0 else s1
        return points[-1][0]

    def resistance_ohm(self, capacity_ah: float) -> float:
        """Internal resistance of a healthy bank of `capacity_ah`."""
        return self.resistance_ohm_ah / max(capacity_ah, 1e-6)


CHEMISTRIES: dict[str, Chemistry] = {
    "lifepo4": Chemistry(
        name="lifepo4",
        cells=4,
        cell_curve=(
            (0.0, 2.50),
            (0.05, 3.00),
            (0.10, 3.20),
            (0.20, 3.25),
            (0.30, 3.28),
            (0.50, 3.30),
            (0.70, 3.32),
            (0.90, 3.35),
            (1.00, 3.45),
        ),
        resistance_ohm_ah=1.0,
        min_soc=0.10,
        charge_efficiency=0.97,
        max_temp_c=60.0,
        cold_derating_per_c=0.005,
    ),
    "lead_acid": Chemistry(
        name="lead_acid",
        cells=6,
        cell_curve=(
            (0.0, 1.93),
            (0.20, 1.98),
            (0.50, 2.03),
            (0.80, 2.08),
            (1.00, 2.12),
        ),
        resistance_ohm_ah=3.0,
        min_soc=0.50,
        charge_efficiency=0.85,
        max_temp_c=50.0,
        cold_derating_per_c=0.01,
    ),
}


def capacity_factor(chemistry: Chemistry, temp_c: float) -> float:
    """Share of rated capacity available at `temp_c` (cold batteries hold less)."""
    if temp_c >= 25.0:
        return 1.0
    return max(0.3, 1.0 - chemistry.cold_derating_per_c * (25.0 - temp_c))


def reserve_fraction(chemistry: Chemistry, soc: float) -> float:
    """Share of the *usable* charge left: 0 at the chemistry's floor, 1 when full."""
    span = 1.0 - chemistry.min_soc
    return min(1.0, max(0.0, (soc - chemistry.min_soc) / span))


def autonomy_hours(
    *,
    chemistry: Chemistry,
    capacity_ah: float,
    soc: float,
    load_w: float,
    temp_c: float = 25.0,
    cells: int | None = None,
    cap_h: float = 999.0,
) -> float:
    """Hours the usable charge lasts at a constant `load_w`, with no sun and no mains.

    Usable energy is capacity × nominal voltage × (state of charge − floor),
    derated for cold. Capped at `cap_h` (an idle node would otherwise report
    years).
    """
    if load_w <= 0.0:
        return cap_h
    bank_v = chemistry.nominal_v * (cells or chemistry.cells) / chemistry.cells
    usable_wh = (
        capacity_ah
        * bank_v
        * max(0.0, soc - chemistry.min_soc)
        * capacity_factor(chemistry, temp_c)
    )
    return min(cap_h, usable_wh / load_w)


def sag_resistance_ohm(
    *,
    chemistry: Chemistry,
    soc: float,
    volts: float,
    amps: float,
    cells: int | None = None,
) -> float | None:
    """Internal resistance implied by a reading under discharge, or None if not measurable.

    ``amps`` is negative while discharging. The drop below the resting
    voltage for `soc` divided by the current is the resistance; a healthy
    bank's is `Chemistry.resistance_ohm`, a sulphated or worn one's several
    times that (the voltage sags under load).
    """
    if amps > -0.5:  # too little current to tell sag from measurement noise
        return None
    drop = chemistry.open_circuit_v(soc, cells=cells) - volts
    return max(0.0, drop / -amps)
