"""Dynamic binarization: each pixel is Bernoulli(level / 255), drawn from 16-bit uniforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.mnist.input_pipeline import binarize


@pytest.mark.slow
def test_frequencies_match_grey_levels():
    # Every grey level 0..255 in one row; 4,000 rows: 1,024,000 Bernoulli draws.
    rows = 4_000
    levels = jnp.tile(jnp.arange(256, dtype=jnp.uint8), (rows, 1))
    pixels = binarize(jax.random.key(0), levels, "dynamic")
    assert pixels.shape == (rows, 256) and pixels.dtype == jnp.float32
    assert set(np.unique(np.asarray(pixels))) <= {0.0, 1.0}
    frequency = np.asarray(pixels.mean(axis=0), np.float64)
    p = np.arange(256) / 255.0
    # Black is never on, white always; elsewhere within 5 standard errors of level / 255.
    assert frequency[0] == 0.0 and frequency[255] == 1.0
    standard_error = np.sqrt(p * (1 - p) / rows)[1:-1]
    np.testing.assert_array_less(np.abs(frequency[1:-1] - p[1:-1]), 5 * standard_error)


@pytest.mark.slow
def test_pixels_of_a_batch_are_independent():
    # Neighbouring pixels share a 32-bit random word: their draws must still be uncorrelated.
    levels = jnp.full((200_000, 2), 128, jnp.uint8)
    pixels = np.asarray(binarize(jax.random.key(1), levels, "dynamic"), np.float64)
    correlation = np.corrcoef(pixels[:, 0], pixels[:, 1])[0, 1]
    assert abs(correlation) < 5 / np.sqrt(len(pixels))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((3, 28, 28), (3, 28, 28, 1)),
        ((2, 5, 3, 3), (2, 5, 3, 3)),
        ((3, 7), (3, 7)),
        ((1, 1), (1, 1)),
    ],
)
@pytest.mark.slow
def test_images_keep_their_shape_with_a_channel_axis_and_odd_sizes(shape, expected):
    images = jnp.full(shape, 255, jnp.uint8)
    pixels = binarize(jax.random.key(2), images, "dynamic")
    assert pixels.shape == expected
    np.testing.assert_array_equal(pixels, 1.0)


@pytest.mark.slow
def test_the_draws_do_not_depend_on_the_image_shape():
    images = jax.random.randint(jax.random.key(4), (3, 28, 28), 0, 256).astype(jnp.uint8)
    shaped = binarize(jax.random.key(5), images, "dynamic")
    flat = binarize(jax.random.key(5), images.reshape(3, 784), "dynamic")
    np.testing.assert_array_equal(shaped.reshape(3, 784), flat)


def test_none_scales_grey_levels():
    images = jnp.array([[0, 51, 255]], jnp.uint8)
    np.testing.assert_allclose(binarize(jax.random.key(0), images, "none"), [[0.0, 0.2, 1.0]])


@pytest.mark.slow
def test_same_key_same_draws():
    images = jnp.full((4, 784), 100, jnp.uint8)
    first = binarize(jax.random.key(3), images, "dynamic")
    np.testing.assert_array_equal(first, binarize(jax.random.key(3), images, "dynamic"))
