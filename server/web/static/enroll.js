// The enrollment page (server/web/pages/enroll.py): consent first, 3-5 checked photos, duplicate warning, save.
// Plain JS, no library. Every request sends the session's CSRF token; the server's sentences come back in the
// user's language, the page's own sentences are in the JSON data block (translated by the server).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const root = $("enroll");
  if (!root) return;
  const data = JSON.parse($("enroll-data").textContent);
  const T = data.texts;
  const csrf = root.dataset.csrf;
  const fmt = (text, values) => text.replace(/%\((\w+)\)s/g, (m, key) => (key in values ? String(values[key]) : m));
  const samples = []; // accepted photos: {encoding, thumbnail_b64, duplicate, item}
  let serverDuplicate = null; // the worker named by a 409 on save
  let stream = null;

  // -- consent gates the capture -------------------------------------------------------------
  const consent = $("consent");
  const capture = $("capture");
  consent.addEventListener("change", () => {
    if (consent.checked) $("result").textContent = ""; // the last worker's result: a new enrollment starts
    capture.disabled = !consent.checked;
    $("capture-locked").hidden = consent.checked;
    if (!consent.checked) stopCamera();
    update();
  });
  ["name", "phone", "employer"].forEach((id) => $(id).addEventListener("input", update));
  $("override").addEventListener("change", update);

  // -- camera ----------------------------------------------------------------------------------
  function stopCamera() {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    $("snap").disabled = true;
  }

  $("start-camera").addEventListener("click", async () => {
    $("camera-status").textContent = "";
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      $("camera-status").textContent = T.camera_none;
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
      const video = $("video");
      video.srcObject = stream;
      await video.play();
      $("snap").disabled = false;
    } catch (err) {
      $("camera-status").textContent = T.camera_denied;
    }
  });

  $("snap").addEventListener("click", () => {
    const video = $("video");
    if (!video.videoWidth) return;
    const canvas = $("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => blob && upload(blob, "camera.jpg"), "image/jpeg", 0.92);
  });

  $("files").addEventListener("change", (event) => {
    Array.from(event.target.files).forEach((file) => upload(file, file.name));
    event.target.value = "";
  });

  // -- one photo -------------------------------------------------------------------------------
  function line(text, className) {
    const p = document.createElement("p");
    p.textContent = text;
    if (className) p.className = className;
    return p;
  }

  function removeButton(onRemove) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = T.remove;
    button.addEventListener("click", onRemove);
    return button;
  }

  async function upload(blob, name) {
    if (samples.length >= data.max) {
      $("result").textContent = fmt(T.too_many, { max: data.max });
      return;
    }
    const item = document.createElement("li");
    item.className = "checking";
    item.append(line(T.checking, "muted"));
    $("samples").append(item);
    const form = new FormData();
    form.append("photo", blob, name);
    let reply, body;
    try {
      reply = await fetch("/api/enrollment/samples", {
        method: "POST", body: form, credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
      });
      body = await reply.json();
    } catch (err) {
      item.className = "refused";
      item.replaceChildren(line(T.failed, "error"), removeButton(() => item.remove()));
      return;
    }
    if (reply.ok && body.ok) {
      const sample = { encoding: body.encoding, thumbnail_b64: body.thumbnail_b64, duplicate: body.duplicate, item };
      samples.push(sample);
      const img = document.createElement("img");
      img.src = "data:image/jpeg;base64," + body.thumbnail_b64;
      img.alt = name;
      item.className = "ok";
      item.replaceChildren(img, line(fmt(T.accepted, { px: body.face_px }), "ok"), removeButton(() => {
        samples.splice(samples.indexOf(sample), 1);
        item.remove();
        serverDuplicate = null; // the photos changed: the next save asks the server again
        update();
      }));
    } else {
      item.className = "refused";
      const problems = Array.isArray(body.problems) && body.problems.length
        ? body.problems.map((p) => p.message) : [typeof body.detail === "string" ? body.detail : T.failed];
      item.replaceChildren(line(T.refused, "error"), ...problems.map((text) => line(text)),
        removeButton(() => item.remove()));
    }
    update();
  }

  // -- state, duplicate warning, save ----------------------------------------------------------
  function duplicate() {
    const found = samples.find((s) => s.duplicate);
    return found ? found.duplicate : serverDuplicate;
  }

  function update() {
    const dup = duplicate();
    $("duplicate").hidden = !dup;
    if (dup) $("duplicate-text").textContent = fmt(T.duplicate, { name: dup.name });
    else $("override").checked = false;
    $("count").textContent = fmt(T.count, { n: samples.length, min: data.min, max: data.max });
    let hint = "";
    if (!consent.checked) hint = T.need_consent;
    else if (!$("name").value.trim()) hint = T.need_name;
    else if (samples.length < data.min) hint = fmt(T.need_more, { min: data.min });
    else if (dup && !$("override").checked) hint = T.need_override;
    $("save-hint").textContent = hint;
    $("save").disabled = hint !== "" || samples.length > data.max;
  }

  function detailText(body) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) return body.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ");
    return T.failed;
  }

  $("save").addEventListener("click", async () => {
    const value = (id) => $(id).value.trim();
    const body = {
      name: value("name"),
      consent: { text_version: data.consent_version, allows_photo: $("allows-photo").checked },
      encodings: samples.map((s) => s.encoding),
      allow_duplicate: !!duplicate() && $("override").checked,
    };
    if (value("phone")) body.phone = value("phone");
    if (value("category")) body.category = value("category");
    if (value("employer")) body.employer = value("employer");
    if (value("session")) body.session_id = Number(value("session"));
    if (value("valid-until")) body.valid_until = new Date(value("valid-until") + "T23:59:59").toISOString();
    if (body.consent.allows_photo && samples.length) body.thumbnail_b64 = samples[0].thumbnail_b64;
    $("save").disabled = true;
    $("result").className = "";
    $("result").textContent = T.saving;
    let reply, answer;
    try {
      reply = await fetch("/api/enrollment/workers", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body),
      });
      answer = await reply.json();
    } catch (err) {
      $("result").className = "error";
      $("result").textContent = T.failed;
      update();
      return;
    }
    if (reply.status === 201) {
      $("result").className = "ok";
      $("result").textContent = fmt(T.saved, { name: answer.name, n: answer.samples });
      $("result").dataset.workerId = answer.worker_id;
      reset();
      return;
    }
    if (reply.status === 409 && answer.duplicate_of) serverDuplicate = answer.duplicate_of;
    $("result").className = "error";
    $("result").textContent = detailText(answer);
    update();
  });

  function reset() {
    samples.splice(0, samples.length);
    serverDuplicate = null;
    $("samples").replaceChildren();
    ["name", "phone", "employer", "valid-until", "category"].forEach((id) => { $(id).value = ""; });
    $("allows-photo").checked = false;
    $("override").checked = false;
    consent.checked = false;
    capture.disabled = true;
    $("capture-locked").hidden = false;
    stopCamera();
    update();
  }

  update();
})();
