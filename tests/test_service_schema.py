"""The API's shapes live in schemas/openapi.json; it must match what the app serves."""

from uceindex.service import openapi


def test_schemas_openapi_is_current():
    expected = openapi.render(openapi.document())
    assert openapi.path().read_text() == expected, "run `python -m uceindex.service.openapi`"


def test_every_route_is_in_the_document():
    paths = openapi.document()["paths"]
    assert {
        "/health",
        "/datasets",
        "/cells/{cell_id}",
        "/search",
        "/annotate",
        "/match",
        "/sql",
        "/qc",
    } <= set(paths)
    assert "multipart/form-data" in paths["/annotate"]["post"]["requestBody"]["content"]
