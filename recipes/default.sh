#!/usr/bin/env bash
# The shipped default model, from the shared corpora alone, in one command:
#
#   bash recipes/default.sh ../shared/data runs/default     # then: avemo predict clip.mp4 --model runs/default/final
#
# Needs `pip install torch==2.13.0 && pip install -e ".[train]"` and
# `pip install --no-deps resemblyzer==0.1.4` (docs/training.md). Each stage is one
# `avemo train` run into its own folder under OUT: a stage whose folder holds a finished model
# (its config.json) is skipped, one cut off resumes from its checkpoint, so an interrupted recipe
# goes on where it stopped when the same command runs again. Why stages, not one run: the face
# CNN needs ~130 passes over its 27,000 images, the voice (on cached Whisper states) ~16 over its
# 10,000 utterances; one run would overtrain the voice or undertrain the face.
set -euo pipefail
D=${1:?usage: bash recipes/default.sh DATA_DIR OUT_DIR}
OUT=${2:?usage: bash recipes/default.sh DATA_DIR OUT_DIR}

SPEECH=(--data "ravdess:$D/ravdess_speech" --data "tess:$D/tess" --data "manifest:$D/ased/ased.csv"
        --data "manifest:$D/nemo/nemo.csv" --data "manifest:$D/savee/savee.csv" --data "manifest:$D/urdu/urdu.csv"
        --data "manifest:$D/turev/turev.csv" --data "manifest:$D/korean_tts/korean_tts.csv")
FACES=(--data "fer2013:$D/fer2013" --data "manifest:$D/jaffe/jaffe.csv"
       --data "manifest:$D/taiwanese_faces/taiwanese_faces.csv")
# Whisper tiny.en's four blocks under the recurrent voice, the speaker's voiceprint, the linear probe
# beside it; the 4-stage face CNN judging up to 4 crops of a segment, each with its mirror image
ARCH=(--audio-front whisper --voice-norm group --voiceprint --whisper-layers 4 --whisper-stack --voice-probe
      --face-channels 32 --face-blocks 4 --max-faces 4 --mirror-faces)
# each utterance once more through a codec, noise (these two recordings' sound), gain and band limits, or a phone
VARIANTS=(--variants 1 --noise "$D/media/no_face.mp4" --noise "$D/media/single_face.mp4")

stage() {  # stage NAME ARGS...: `avemo train ARGS --out OUT/NAME`, unless it finished before
  local name=$1
  shift
  if [[ -f "$OUT/$name/config.json" ]]; then
    echo "recipe: $OUT/$name is finished; skipped"
    return
  fi
  echo "recipe: $name"
  avemo train "$@" --out "$OUT/$name"
}

# 1. both branches and the heads they share, from nothing: each step one voice and one face batch
#    (16 passes over the voices, ~24 over the faces; features: ~33 min once, then ~2.2 min an epoch)
stage joint "${SPEECH[@]}" "${FACES[@]}" "${ARCH[@]}" "${VARIANTS[@]}" --mixup 0.2 --epochs 16 --patience 16
# 2. the voice again, from a fresh start, against those heads kept frozen (16 epochs, ~15 min): the voice
#    learns their language undisturbed by the face's pull on them, as the six-run model's voice did
stage voice "${SPEECH[@]}" "${ARCH[@]}" "${VARIANTS[@]}" --init "$OUT/joint" --epochs 16
# 3. the face again, from a fresh start, against the heads kept frozen: one cosine cycle of 40 epochs
#    (~36 min), as the six-run model's face began, where the joint stage's ~24 passes were shared with the voice
stage face1 "${FACES[@]}" "${ARCH[@]}" --init "$OUT/voice" --mixup 0.2 --epochs 40 --patience 40
# 4-6. three more cosine cycles on the face alone, each a warm restart from the one before (~28 min each);
#    the voice and the heads stay as they are
previous=face1
for k in 2 3 4; do
  stage "face$k" "${FACES[@]}" "${ARCH[@]}" --init "$OUT/$previous" --warm --mixup 0.2 --lr 1e-3 \
    --weight-decay 0.05 --epochs 30 --patience 30
  previous=face$k
done
# 7. the face as a video shows it: 12 more epochs from face4's weights at a quarter of the learning rate, each
#    crop half the time small, blurred, lit from one side, grainy or JPEG-compressed (augment.face_as_video; ~25 min)
stage face_video "${FACES[@]}" "${ARCH[@]}" --init "$OUT/$previous" --warm --mixup 0.2 --lr 5e-4 --weight-decay 0.05 \
  --epochs 12 --patience 12
# 8. the voice once more from its weights, its augmented copies phone calls two times in five (augment.phone_call:
#    a room, noise, automatic gain, 300-3400 Hz, an 8 kHz codec), at a quarter of the learning rate (~10 min)
stage voice_phone "${SPEECH[@]}" "${ARCH[@]}" "${VARIANTS[@]}" --init "$OUT/face_video" --warm --lr 5e-4 --epochs 8 \
  --patience 8
# 9. no training: the voice probe, each modality's temperature and the fusion gate (on pairs clean and as
#    recorded: faces as video shows them, voices their augmented copies), on all corpora
stage final "${SPEECH[@]}" "${FACES[@]}" --init "$OUT/voice_phone" --voice-probe --mirror-faces --max-faces 4 \
  "${VARIANTS[@]}" --epochs 0
# 10. the ONNX graphs the default install runs, the face CNN and Whisper's feed-forward widening products int8 (the
#     face's activation ranges calibrated on FER2013's training faces; benchmarks/agreement.py measures what that changes)
avemo export --onnx "$OUT/final" --model "$OUT/final" --int8 face,encoder --calibration "$D/fer2013/train"
echo "recipe: done: $OUT/final"
