"""torch.hub entry points: one per `segformer.list_models()` name, with "-" as "_".

    model = torch.hub.load("path/to/segformer", "segformer_b0", source="local", num_classes=19)
    model = torch.hub.load("path/to/segformer", "segformer_b0_ade_512", source="local", pretrained=True)

Keyword arguments go to `segformer.create_model` (random weights); `pretrained=True` loads the preset's hub
weights with `segformer.load_model` instead (presets with a hub id only). A clone works without installing the
package: its src/ folder is put on the import path.
"""

import sys
from pathlib import Path

dependencies = ["torch", "numpy", "safetensors", "yaml", "PIL"]

try:
    import segformer
except ImportError:  # a plain clone: use its sources
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    import segformer


def _entry(name: str):
    def load(pretrained: bool = False, **kwargs):
        if not pretrained:
            return segformer.create_model(name, **kwargs)
        from segformer.models.zoo import get_entry

        hub_id = get_entry(name).hub_id
        if hub_id is None:
            raise ValueError(f"{name} has no pretrained weights; use pretrained=False or a preset with a hub id "
                             f"(`segformer models`)")
        return segformer.load_model(hub_id, **kwargs)

    load.__name__ = name.replace("-", "_")
    load.__doc__ = f"{name}: `segformer.create_model({name!r}, **kwargs)`, or its hub weights with pretrained=True."
    return load


for _name in segformer.list_models():
    globals()[_name.replace("-", "_")] = _entry(_name)
