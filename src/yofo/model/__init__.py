"""Network components of YOFO, one module each; `yofo.model.yofo.YOFO` wires them."""
