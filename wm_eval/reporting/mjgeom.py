"""MuJoCo geoms as Rerun primitives, and body poses from MuJoCo forward kinematics.

A robot is drawn as one Rerun entity per body, ``<body>``, whose pose changes per step, and one
child entity per geom, ``<body>/<geom>``, holding the geom's static pose in the body frame and its
shape. The geometry is therefore logged once; a rollout only adds body transforms.

Conventions that differ between the two libraries:

* MuJoCo quaternions are ``(w, x, y, z)``; Rerun wants ``(x, y, z, w)`` (:func:`wxyz_to_xyzw`).
* MuJoCo capsules and cylinders are centred on the geom frame with ``size = (radius, half_length)``;
  Rerun's ``Capsules3D`` run from ``z = 0`` to ``length``, so they are shifted by minus the half
  length. ``Cylinders3D`` are centred like MuJoCo's.
* Planes are drawn as thin boxes (their top face at the plane), sized to the motion by
  :func:`with_plane_extent` (MuJoCo draws a plane of size 0 as infinite).

Geoms of groups 3 and above (MuJoCo's convention for collision-only geoms), fully transparent
geoms and height fields or SDFs are not drawn. Meshes are drawn from the compiled model's vertices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["GeomShape", "model_geoms", "body_poses", "geom_archetypes", "with_plane_extent", "plane_lines",
           "wxyz_to_xyzw", "entity_name"]

_DEFAULT_RGBA = np.array([0.5, 0.5, 0.5, 1.0], dtype=np.float32)
_PLANE_THICKNESS = 0.005
_KINDS = {"mjGEOM_PLANE": "plane", "mjGEOM_SPHERE": "sphere", "mjGEOM_CAPSULE": "capsule",
          "mjGEOM_ELLIPSOID": "ellipsoid", "mjGEOM_CYLINDER": "cylinder", "mjGEOM_BOX": "box",
          "mjGEOM_MESH": "mesh"}


def wxyz_to_xyzw(quat: np.ndarray) -> np.ndarray:
    """Reorder MuJoCo quaternions ``[..., (w, x, y, z)]`` to Rerun's ``[..., (x, y, z, w)]``."""
    return np.roll(np.asarray(quat), -1, axis=-1)


def entity_name(name: str, fallback: str) -> str:
    """An entity-path-safe name: ``name`` with anything but letters, digits, ``_ . -`` replaced, or ``fallback``."""
    return re.sub(r"[^\w.\-]+", "_", name) if name else fallback


@dataclass(frozen=True)
class GeomShape:
    """One drawable geom of a MuJoCo model, in the frame of its body.

    Attributes:
        name: entity-safe geom name (``geom<i>`` when unnamed).
        body: body id the geom is attached to (0 is the world).
        body_name: entity-safe body name (``body<i>`` when unnamed).
        kind: ``"plane" | "sphere" | "capsule" | "ellipsoid" | "cylinder" | "box" | "mesh"``.
        pos: ``[3]`` position in the body frame.
        quat: ``[4]`` orientation in the body frame, Rerun order ``(x, y, z, w)``.
        size: ``[3]`` MuJoCo ``geom_size`` (radius, half length, half sizes... by kind).
        rgba: ``[4]`` colour in ``[0, 1]`` (the material's when the geom keeps the default colour).
        vertices: ``[V, 3]`` mesh vertices in the geom frame, meshes only.
        faces: ``[F, 3]`` mesh triangle indices, meshes only.
    """

    name: str
    body: int
    body_name: str
    kind: str
    pos: np.ndarray
    quat: np.ndarray
    size: np.ndarray
    rgba: np.ndarray
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None


def model_geoms(model: Any) -> list[GeomShape]:
    """Every drawable geom of a ``mujoco.MjModel``, in geom order."""
    import mujoco

    shapes = []
    for g in range(model.ngeom):
        kind = _KINDS.get(mujoco.mjtGeom(model.geom_type[g]).name)
        rgba = model.geom_rgba[g].astype(np.float32)
        if model.geom_matid[g] >= 0 and np.array_equal(rgba, _DEFAULT_RGBA):
            rgba = model.mat_rgba[model.geom_matid[g]].astype(np.float32)
        if kind is None or model.geom_group[g] >= 3 or rgba[3] == 0:
            continue
        vertices = faces = None
        if kind == "mesh":
            mesh = model.geom_dataid[g]
            v0, nv = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
            f0, nf = model.mesh_faceadr[mesh], model.mesh_facenum[mesh]
            vertices = model.mesh_vert[v0 : v0 + nv].astype(np.float32)
            faces = model.mesh_face[f0 : f0 + nf].astype(np.uint32)
        body = int(model.geom_bodyid[g])
        shapes.append(GeomShape(
            name=entity_name(model.geom(g).name, f"geom{g}"), body=body,
            body_name=entity_name(model.body(body).name, f"body{body}"), kind=kind,
            pos=model.geom_pos[g].copy(), quat=wxyz_to_xyzw(model.geom_quat[g]), size=model.geom_size[g].copy(),
            rgba=rgba, vertices=vertices, faces=faces,
        ))
    return shapes


def body_poses(model: Any, qpos: np.ndarray, mocap_pos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """World poses of every body for each row of ``qpos [T, nq]`` (and ``mocap_pos [T, nmocap, 3]``, where
    mocap bodies such as goals move per episode) by ``mujoco.mj_kinematics``.

    Returns positions ``[T, nbody, 3]`` and quaternions ``[T, nbody, 4]`` in Rerun order ``(x, y, z, w)``.
    A scratch ``MjData`` is used, so no simulator state is touched.
    """
    import mujoco

    qpos = np.asarray(qpos, dtype=np.float64)
    data = mujoco.MjData(model)
    xpos = np.empty((len(qpos), model.nbody, 3))
    xquat = np.empty((len(qpos), model.nbody, 4))
    for t, row in enumerate(qpos):
        data.qpos[:] = row
        if mocap_pos is not None:
            data.mocap_pos[:] = mocap_pos[t]
        mujoco.mj_kinematics(model, data)
        xpos[t], xquat[t] = data.xpos, data.xquat
    return xpos, wxyz_to_xyzw(xquat)


def with_plane_extent(shape: GeomShape, points: np.ndarray, *, margin: float = 1.0) -> GeomShape:
    """A plane sized to cover ``points [N, 3]`` (world frame, plane on the world body) plus ``margin``.

    MuJoCo's plane size is only visual (contacts are with the infinite plane, and size 0 draws it
    infinite): a walker can run off it, and a 40 m floor around a 1 m robot makes the viewer's
    default camera frame the floor rather than the robot. The drawn floor follows the motion instead.
    """
    from scipy.spatial.transform import Rotation

    local = Rotation.from_quat(shape.quat).inv().apply(np.asarray(points).reshape(-1, 3) - shape.pos)
    low, high = local[:, :2].min(axis=0) - margin, local[:, :2].max(axis=0) + margin
    centre = Rotation.from_quat(shape.quat).apply([*(low + high) / 2, 0.0]) + shape.pos
    return replace(shape, pos=centre, size=np.array([*(high - low) / 2, shape.size[2]]))


def plane_lines(shape: GeomShape, *, spacing: float = 1.0) -> Any:
    """``LineStrips3D`` of a metre grid on a plane (in the plane's frame): the floor's motion cue."""
    import rerun as rr

    hx, hy = float(shape.size[0]), float(shape.size[1])
    xs = np.arange(np.ceil(-hx / spacing), np.floor(hx / spacing) + 1) * spacing
    ys = np.arange(np.ceil(-hy / spacing), np.floor(hy / spacing) + 1) * spacing
    lift = _PLANE_THICKNESS / 5
    strips = [[[x, -hy, lift], [x, hy, lift]] for x in xs] + [[[-hx, y, lift], [hx, y, lift]] for y in ys]
    color = _rgba8(np.append(shape.rgba[:3] * 0.7, 1.0))
    return rr.LineStrips3D(strips, colors=[color], radii=rr.Radius.ui_points(1.0))


def _rgba8(rgba: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8)


def geom_archetypes(shape: GeomShape, *, rgba: np.ndarray | None = None) -> list[Any]:
    """The static Rerun archetypes of one geom entity: its pose in the body frame and its shape.

    ``rgba`` (``[4]`` in ``[0, 1]``) overrides the model colour, e.g. for a semi-transparent ghost;
    shapes are drawn solid so that the alpha channel applies.
    """
    import rerun as rr

    color = _rgba8(shape.rgba if rgba is None else np.asarray(rgba))
    solid = rr.components.FillMode.Solid
    r, half = float(shape.size[0]), float(shape.size[1])
    if shape.kind == "capsule":
        primitive = rr.Capsules3D(lengths=[2 * half], radii=[r], translations=[[0.0, 0.0, -half]],
                                  colors=[color], fill_mode=solid)
    elif shape.kind == "cylinder":
        primitive = rr.Cylinders3D(lengths=[2 * half], radii=[r], colors=[color], fill_mode=solid)
    elif shape.kind == "sphere":
        primitive = rr.Ellipsoids3D(half_sizes=[[r, r, r]], colors=[color], fill_mode=solid)
    elif shape.kind == "ellipsoid":
        primitive = rr.Ellipsoids3D(half_sizes=[shape.size], colors=[color], fill_mode=solid)
    elif shape.kind == "box":
        primitive = rr.Boxes3D(half_sizes=[shape.size], colors=[color], fill_mode=solid)
    elif shape.kind == "plane":
        primitive = rr.Boxes3D(half_sizes=[[r, half, _PLANE_THICKNESS]], centers=[[0.0, 0.0, -_PLANE_THICKNESS]],
                               colors=[color], fill_mode=solid)
    else:
        primitive = rr.Mesh3D(vertex_positions=shape.vertices, triangle_indices=shape.faces, albedo_factor=color)
    return [rr.Transform3D(translation=shape.pos, quaternion=shape.quat), primitive]
