import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nanodet.data import collate_and_pad, naive_collate, stack_batch_img
from nanodet.data.dataset import XMLDataset


def test_stack_pads_bottom_right_to_a_multiple_of_32_and_keeps_values():
    imgs = [torch.rand(3, 100, 150), torch.rand(3, 120, 90)]
    batch = stack_batch_img(imgs, divisible=32, pad_value=-1.0)
    assert batch.shape == (2, 3, 128, 160)
    torch.testing.assert_close(batch[0, :, :100, :150], imgs[0])
    torch.testing.assert_close(batch[1, :, :120, :90], imgs[1])
    assert (batch[0, :, 100:] == -1).all() and (batch[0, :, :, 150:] == -1).all()
    assert (batch[1, :, 120:] == -1).all() and (batch[1, :, :, 90:] == -1).all()


def test_stack_without_divisible_pads_to_the_largest_image_only():
    batch = stack_batch_img([torch.ones(3, 100, 150), torch.ones(3, 120, 90)], divisible=0)
    assert batch.shape == (2, 3, 120, 150)
    assert batch[0, :, 100:].eq(0).all()


def test_stack_of_aligned_images_is_unchanged():
    imgs = [torch.rand(3, 320, 320) for _ in range(3)]
    torch.testing.assert_close(stack_batch_img(imgs), torch.stack(imgs))


def test_stack_rejects_empty_or_mismatched_channels():
    with pytest.raises(ValueError):
        stack_batch_img([])
    with pytest.raises(ValueError, match="channels"):
        stack_batch_img([torch.zeros(3, 8, 8), torch.zeros(1, 8, 8)])


def test_naive_collate_keeps_arrays_and_images_as_lists_and_numbers_as_tensors():
    samples = [{"img": torch.zeros(3, 4, 5 + i),
                "img_info": {"file_name": f"{i}.png", "height": 10 + i, "width": 20, "id": i},
                "gt_bboxes": np.zeros((i, 4), np.float32), "score": 0.5 * i} for i in range(3)]
    batch = naive_collate(samples)
    assert isinstance(batch["img"], list) and [t.shape[-1] for t in batch["img"]] == [5, 6, 7]
    assert batch["img_info"]["file_name"] == ["0.png", "1.png", "2.png"]
    assert batch["img_info"]["height"].tolist() == [10, 11, 12]
    assert batch["img_info"]["id"].dtype == torch.int64
    assert batch["score"].dtype == torch.float64
    assert [b.shape for b in batch["gt_bboxes"]] == [(0, 4), (1, 4), (2, 4)]


def test_dataloader_batches_dataset_samples(synthetic_data, eval_pipeline):
    dataset = XMLDataset(img_path=synthetic_data.img_dir, ann_path=synthetic_data.voc_xml_dir,
                         input_size=[320, 320], pipeline=eval_pipeline, mode="val",
                         class_names=synthetic_data.class_names)
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=naive_collate)))
    images = stack_batch_img(batch["img"], divisible=32)
    assert images.shape[:2] == (4, 3) and images.shape[2] % 32 == 0 and images.shape[3] % 32 == 0
    assert max(images.shape[2:]) == 320
    for i, img in enumerate(batch["img"]):
        torch.testing.assert_close(images[i, :, :img.shape[1], :img.shape[2]], img)
        assert len(batch["gt_bboxes"][i]) == len(batch["gt_labels"][i])
    assert batch["img_info"]["id"].tolist() == [r.id for r in dataset.records[:4]]
    assert len(batch["warp_matrix"]) == 4


def test_collate_and_pad_stacks_images_and_keeps_the_rest_per_image(synthetic_data,
                                                                     eval_pipeline):
    dataset = XMLDataset(img_path=synthetic_data.img_dir, ann_path=synthetic_data.voc_xml_dir,
                         input_size=[320, 320], pipeline=eval_pipeline, mode="val",
                         class_names=synthetic_data.class_names)
    samples = [dataset[i] for i in range(3)]
    batch = collate_and_pad(samples, divisible=32)
    torch.testing.assert_close(batch["img"], stack_batch_img([s["img"] for s in samples]))
    assert [len(b) for b in batch["gt_bboxes"]] == [len(s["gt_bboxes"]) for s in samples]
