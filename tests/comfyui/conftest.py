import pytest

from .harness import Comfy, comfy_paths


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/comfyui/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.comfyui)


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    found = comfy_paths()
    if found is None:
        pytest.skip("end-to-end ComfyUI tests need COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (its venv's "
                    "python); .ci/run sets both when ComfyUI is installed at /opt/comfyui")
    comfy_dir, python = found
    if not (comfy_dir / "main.py").is_file() or not python.exists():
        pytest.skip(f"COMFYUI_DIR={comfy_dir} has no main.py or COMFYUI_PYTHON={python} does not exist")
    c = Comfy(comfy_dir, python, tmp_path_factory.mktemp("comfy"))
    c.prepare()
    try:
        c.start()
        yield c
    finally:
        c.stop()
