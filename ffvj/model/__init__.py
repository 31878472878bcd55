"""The learned feature hierarchy: a pure model, its checkpoints, and how it is trained and judged.

    net          ModelConfig, FeatureAutoencoder (encode = γ_ℓ, decode = γ_ℓ⁻¹, encode_all, reconstruct)
                 and its inference fast path, FastPath (model.fast())
    fastops      the fused encoder/decoder tails FastPath uses (tanh via sigmoid, sum pooling, ...) and the
                 binomial and half-band filters
    checkpoint   load(name_or_path) → (model, card); save; safetensors weights beside a JSON card
    data         training pictures: image folders, video frames, scikit-image's built-in photos
    train        train(ModelConfig, TrainConfig, out): layer-wise, then end to end
    evaluate     per-level PSNR/SSIM next to bicubic, and the model card's pictures
    views        LevelView: a feature level projected to RGB (its principal components, kept in the card)
"""
