# CA2ST, revision-era variant: inside the audio links the learned space /
# time position tables are replaced by time encodings -- a small MLP on the
# segment timestamps (seconds) of every token (one MLP for the video slots,
# one for the spectrogram columns) -- and each expert's down / up
# projections are shared by all links of a layer (bcast_share). The pipeline
# provides the timestamps (PackAudioVisualInputs packs "times").
# Matches the ca2st_single_rev dump (tools/check_parity.py --config ...).
_base_ = ['ca2st_vggsound.py']

_audio_link = dict(layers=[9, 10, 11], num_heads=12, pos_embed=False,
                   time_encoding=True)
model = dict(
    backbone=dict(
        links=[
            dict(experts=('clip', 'vmae'),
                 windows=dict(clip='time', vmae='space'), layers=None),
            dict(experts=('clip', 'audio'),
                 windows=dict(clip='global', audio='global'), **_audio_link),
            dict(experts=('vmae', 'audio'),
                 windows=dict(vmae='global', audio='global'), **_audio_link),
        ],
        time_encoding=dict(_delete_=True, split=True, num_layers=3, eps=1e-5),
        share_projections=True))
