# CA2ST ViT-B/16 "CA9" (joohyun7u/CA2ST models/ast_Bsquare.py): CLIP (space)
# + VideoMAE (time) + AST (audio). Every layer runs CAST's S&T bottleneck
# cross-attention; the last three layers (9, 10, 11) then run A&S and A&T
# B-CA with global windows, one after the other. Head: adapter(clip) +
# adapter(vmae) + audio_adapter(audio); the audio adapter is
# Linear-QuickGELU-Linear, not zero-initialised (as published).
# presets_av.ca2st_recognizer_cfg() builds from it.
_base_ = ['cava_vit_b.py']
model = dict(
    backbone=dict(
        # stream order clip, vmae, audio (the order of the pooled features
        # and of the head adapters): all three spelled out
        experts=dict(
            _delete_=True,
            clip=dict(
                type='CLIPViTExpert',
                embed_dim=768,
                depth=12,
                num_heads=12,
                patch_size=16,
                mlp_ratio=4.0,
                frame_start=1,  # frames 1, 3, ..., 15
                frame_step=2,
                post_norm_eps=1e-5,
                pretrained=None),
            vmae=dict(
                type='VideoMAEExpert',
                embed_dim=768,
                depth=12,
                num_heads=12,
                patch_size=16,
                tubelet_size=2,
                mlp_ratio=4.0,
                pretrained=None),
            audio=dict(
                type='ASTExpert',
                embed_dim=768,
                depth=12,
                num_heads=12,
                mlp_ratio=4.0,
                input_fdim=128,
                input_tdim=1024,
                fstride=10,
                tstride=10,
                pretrained=None)),
        links=[
            # S&T (CAST) in every layer
            dict(
                experts=('clip', 'vmae'),
                windows=dict(clip='time', vmae='space'),
                layers=None),
            # then A&S and A&T in layers 9-11, sequentially
            dict(
                experts=('clip', 'audio'),
                windows=dict(clip='global', audio='global'),
                layers=[9, 10, 11],
                num_heads=12,
                pos_embed=True,
                time_encoding=False),
            dict(
                experts=('vmae', 'audio'),
                windows=dict(vmae='global', audio='global'),
                layers=[9, 10, 11],
                num_heads=12,
                pos_embed=True,
                time_encoding=False),
        ],
        share_projections=False),
    cls_head=dict(
        num_streams=3,
        stream_adapters=[
            dict(), dict(), dict(act='quick_gelu', zero_init=False)
        ]))
