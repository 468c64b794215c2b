"""Datasets through the API: create, add (classes, unlabelled, archives), relabel, delete, version, train."""

from __future__ import annotations

import io
import tarfile
import zipfile

from ..conftest import data_dir_files, image_bytes, photos

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


def new_dataset(client, name: str = "pets") -> dict:
    response = client.post("/datasets", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


NAMES = {RED: "red", BLUE: "blue", GREEN: "green"}


def pngs(color, n: int, start: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("files", (f"{NAMES[color]}-{i}.png", image_bytes(color, noise=20, seed=i), "image/png"))
        for i in range(start, start + n)
    ]


def zipped(entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "../../etc/passwd")
    return buffer.getvalue()


def test_create_add_relabel_delete_bump_the_version(client) -> None:
    dataset = new_dataset(client)
    assert dataset["version"] == 1 and dataset["image_count"] == 0 and dataset["class_names"] == []
    dataset_id = dataset["dataset_id"]

    added = client.post(f"/datasets/{dataset_id}/images", data={"label": "red"}, files=pngs(RED, 3)).json()
    assert added["version"] == 2 and [a["label"] for a in added["added"]] == ["red"] * 3
    assert [a["filename"] for a in added["added"]] == ["red-0.png", "red-1.png", "red-2.png"]
    seed_style = client.post(
        f"/datasets/{dataset_id}/images",
        data={"label1": "blue", "label2": "Red"},
        files=[("files1", f) for _, f in pngs(BLUE, 2)] + [("files2", f) for _, f in pngs(RED, 1, 5)],
    )
    assert seed_style.status_code == 200, seed_style.text
    assert seed_style.json()["version"] == 3
    unlabelled = client.post(f"/datasets/{dataset_id}/images", files=pngs(GREEN, 2)).json()
    assert unlabelled["version"] == 4 and {a["label"] for a in unlabelled["added"]} == {None}

    # The same photo again: listed as a duplicate, not stored, no new version.
    again = client.post(f"/datasets/{dataset_id}/images", data={"label": "blue"}, files=pngs(RED, 1)).json()
    assert again["added"] == [] and again["version"] == 4
    assert again["duplicates"] == [{"filename": "red-0.png", "image_id": added["added"][0]["image_id"]}]

    dataset = client.get(f"/datasets/{dataset_id}").json()
    # "Red" joined the existing class "red"; classes keep the order they first appeared in.
    assert dataset["class_names"] == ["red", "blue"] and dataset["per_class_counts"] == {"red": 4, "blue": 2}
    assert dataset["unlabelled_count"] == 2 and dataset["image_count"] == 8 and dataset["version"] == 4

    green_ids = [a["image_id"] for a in unlabelled["added"]]
    relabelled = client.patch(f"/datasets/{dataset_id}/images", json={"image_ids": green_ids, "label": "green"}).json()
    assert relabelled == {"version": 5, "updated": 2, "deleted": None}
    page = client.get(f"/datasets/{dataset_id}/images", params={"label": "green"}).json()
    assert page["count"] == 2 and {i["filename"] for i in page["items"]} == {"green-0.png", "green-1.png"}
    assert page["items"][0]["width"] == 64 and len(page["items"][0]["content_hash"]) == 64
    photo = client.get(f"/datasets/{dataset_id}/images/{green_ids[0]}")
    assert photo.status_code == 200 and photo.content == image_bytes(GREEN, noise=20, seed=0)

    blue_ids = [
        i["image_id"] for i in client.get(f"/datasets/{dataset_id}/images", params={"label": "blue"}).json()["items"]
    ]
    deleted = client.request("DELETE", f"/datasets/{dataset_id}/images", json={"image_ids": blue_ids}).json()
    assert deleted["version"] == 6 and deleted["deleted"] == 2
    dataset = client.get(f"/datasets/{dataset_id}").json()
    assert dataset["class_names"] == ["red", "green"] and "blue" not in dataset["per_class_counts"]
    assert client.get(f"/datasets/{dataset_id}/images/{blue_ids[0]}").status_code == 404

    assert client.patch(f"/datasets/{dataset_id}", json={"name": "colours"}).json()["name"] == "colours"
    assert client.get("/datasets").json()["count"] == 1


def test_bad_requests_change_nothing(client, settings) -> None:
    dataset_id = new_dataset(client)["dataset_id"]
    first = client.post(f"/datasets/{dataset_id}/images", data={"label": "red"}, files=pngs(RED, 2)).json()
    image_id = first["added"][0]["image_id"]
    before = data_dir_files(settings.data_dir)

    def refused(response, status: int, code: str) -> None:
        assert response.status_code == status and response.json()["code"] == code, response.text
        assert data_dir_files(settings.data_dir) == before
        assert client.get(f"/datasets/{dataset_id}").json()["version"] == 2

    unknown = "0" * 32
    refused(client.get(f"/datasets/{unknown}"), 404, "not_found")
    refused(client.post(f"/datasets/{unknown}/images", files=pngs(RED, 1)), 404, "not_found")
    refused(
        client.patch(f"/datasets/{dataset_id}/images", json={"image_ids": [image_id, unknown], "label": "x"}),
        404,
        "not_found",
    )
    refused(
        client.patch(f"/datasets/{dataset_id}/images", json={"image_ids": [image_id], "label": "Unknown"}),
        422,
        "reserved_label",
    )
    refused(
        client.patch(f"/datasets/{dataset_id}/images", json={"image_ids": [image_id], "label": "a/b"}),
        422,
        "invalid_label",
    )
    refused(client.request("DELETE", f"/datasets/{dataset_id}/images", json={"image_ids": [unknown]}), 404, "not_found")
    bad = [("files", ("notes.jpg", b"not an image", "image/jpeg"))]
    refused(
        client.post(f"/datasets/{dataset_id}/images", data={"label": "red"}, files=pngs(BLUE, 2) + bad),
        422,
        "invalid_image",
    )
    refused(
        client.post(f"/datasets/{dataset_id}/images", data={"lable": "red"}, files=pngs(BLUE, 1)), 422, "unknown_field"
    )
    refused(client.post(f"/datasets/{dataset_id}/train"), 422, "too_few_classes")
    refused(client.post(f"/datasets/{dataset_id}/train", data={"epochs": "0"}), 422, "invalid_parameter")
    refused(
        client.post(
            f"/datasets/{dataset_id}/images", files={"archive": ("a.zip", b"PK\x03\x04broken", "application/zip")}
        ),
        422,
        "invalid_archive",
    )
    refused(
        client.post(
            f"/datasets/{dataset_id}/images",
            files={"archive": ("a.zip", zipped({"readme.txt": b"hi", "a.png": image_bytes(RED)}), "application/zip")},
        ),
        422,
        "invalid_archive_layout",
    )
    bomb = zipped({"cats/bomb.png": b"\0" * (64 << 20)})
    refused(
        client.post(f"/datasets/{dataset_id}/images", files={"archive": ("bomb.zip", bomb, "application/zip")}),
        413,
        "archive_too_large",
    )


def test_a_zip_of_real_photos_with_junk_becomes_classes(client) -> None:
    cats, dogs = photos("cats_dogs", "train", "cats", count=6), photos("cats_dogs", "train", "dogs", count=6)
    entries = {f"pets/cats/{p.name}": p.read_bytes() for p in cats} | {
        f"pets/dogs/{p.name}": p.read_bytes() for p in dogs
    }
    entries |= {
        "__MACOSX/pets/cats/._a.jpg": b"junk",
        "pets/.DS_Store": b"junk",
        "pets/cats/.hidden.jpg": cats[0].read_bytes(),
        "pets/.ipynb_checkpoints/x.jpg": cats[1].read_bytes(),
        "pets/notes.txt": b"hello",
        "pets/dogs/readme.md": b"# not a photo",
    }
    archive = zipped(entries, links=("pets/cats/link.jpg",))
    dataset_id = new_dataset(client)["dataset_id"]
    added = client.post(f"/datasets/{dataset_id}/images", files={"archive": ("pets.zip", archive, "application/zip")})
    assert added.status_code == 200, added.text
    body = added.json()
    assert len(body["added"]) == 12 and body["version"] == 2
    assert {a["label"] for a in body["added"]} == {"cats", "dogs"}
    assert {a["filename"] for a in body["added"]} >= {f"pets/cats/{cats[0].name}"}
    skipped = {s["filename"]: s["code"] for s in body["skipped"]}
    assert skipped["pets/notes.txt"] == "outside_class_folder"
    assert skipped["pets/dogs/readme.md"] in ("unsupported_format", "invalid_image")
    assert skipped["pets/cats/link.jpg"] == "skipped_entry" and skipped["__MACOSX/pets/cats/._a.jpg"] == "skipped_entry"
    assert {"pets/.DS_Store", "pets/cats/.hidden.jpg", "pets/.ipynb_checkpoints/x.jpg"} <= set(skipped)

    # A tar.gz of the same photos adds nothing new: every photo is an exact duplicate.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in cats:
            tar.add(path, arcname=f"cats/{path.name}")
    again = client.post(
        f"/datasets/{dataset_id}/images", files={"archive": ("pets.tar.gz", buffer.getvalue(), "application/gzip")}
    ).json()
    assert again["added"] == [] and len(again["duplicates"]) == 6 and again["version"] == 2


def test_train_accepts_an_archive_and_a_zip_as_an_image_is_explained(client) -> None:
    entries = {f"red/{i}.png": image_bytes(RED, noise=20, seed=i) for i in range(4)}
    entries |= {f"blue/{i}.png": image_bytes(BLUE, noise=20, seed=i) for i in range(4)}
    job = client.post(
        "/train",
        data={"epochs": "2", "wait": "true"},
        files={"archive": ("colours.zip", zipped(entries), "application/zip")},
    ).json()
    assert job["status"] == "succeeded", job
    assert sorted(job["class_names"]) == ["blue", "red"] and job["dataset_id"]
    as_image = client.post(
        "/train",
        data={"label1": "a", "label2": "b"},
        files=[("files1", ("x.zip", zipped(entries), "application/zip"))] * 2
        + [("files2", ("y.png", image_bytes(RED), "image/png"))] * 2,
    )
    assert as_image.status_code == 422
    assert "archive" in " ".join(e["detail"] for e in as_image.json()["errors"])
