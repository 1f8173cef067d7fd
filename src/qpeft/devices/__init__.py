"""What a chip is and what it does to a circuit: device presets (Origin Wukong, IBM fake
backends), calibration dumps, transpilation to the chip, its noise, readout mitigation."""

from qpeft.devices.device import Device
from qpeft.devices.presets import DEVICES, device_names, get_device

__all__ = ["DEVICES", "Device", "device_names", "get_device"]
