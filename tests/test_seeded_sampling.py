"""Seeded sampling of the CPU pipeline: an epoch's order and augmentation follow from (seed, epoch)."""

import random

import torch

from nanodet.data.dataset import XMLDataset
from nanodet.data.seeded_sampling import SeededBatches, SeededSampler


def test_an_epoch_is_a_function_of_seed_and_epoch_alone():
    sampler = SeededSampler(10, seed=3)
    sampler.set_epoch(2)
    epoch_2 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) != epoch_2
    sampler.set_epoch(2)
    assert list(sampler) == epoch_2  # again, whatever was drawn in between
    assert sorted(index for index, _ in epoch_2) == list(range(10))
    assert len({seed for _, seed in epoch_2}) == 10
    assert list(SeededSampler(10, seed=4)) != list(SeededSampler(10, seed=3))


def test_ranks_share_one_order_and_take_disjoint_equal_shares():
    shares = [list(SeededSampler(10, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert [len(share) for share in shares] == [3, 3, 3]
    whole = list(SeededSampler(10, seed=1))
    assert sorted(sum(shares, [])) == sorted(whole[:9])


def test_seeded_batches_follow_the_batch_samplers_epochs():
    class ByEpoch:
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 2

        def __iter__(self):
            self.epoch += 1
            return iter([[0, 1], [2, 3]])

    batches = SeededBatches(ByEpoch(), seed=5)
    first, second = list(batches), list(batches)
    assert [[i for i, _ in batch] for batch in first] == [[0, 1], [2, 3]]
    assert first != second  # each iteration is the next epoch: new augmentation seeds
    batches.set_epoch(0)
    assert list(batches) == first and batches.batch_sampler.epoch == 1


def test_a_seeded_sample_is_augmented_the_same_whatever_the_global_stream(synthetic_data, train_pipeline):
    dataset = XMLDataset(img_path=synthetic_data.img_dir, ann_path=synthetic_data.voc_xml_dir,
                         input_size=[64, 64], pipeline=train_pipeline, class_names=synthetic_data.class_names,
                         mode="train")
    random.seed(0)
    first = dataset[(1, 12345)]
    after = random.random()
    random.seed(99)
    again = dataset[(1, 12345)]
    torch.testing.assert_close(again["img"], first["img"])
    random.seed(0)
    assert random.random() == after  # the caller's stream went on as if the sample drew nothing
    random.seed(0)
    assert not torch.equal(dataset[(1, 54321)]["img"], first["img"])  # another seed, another augmentation
