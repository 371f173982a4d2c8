// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * Stand-in nvidia_uvm: depends on nvidia and creates /dev/nvidia-uvm, whose
 * open files hold this module (CUDA processes hold it on a real host).
 */
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/module.h>

extern const char *nvidia_stand_in_version(void);

static int uvm_major;
static struct class *uvm_class;

static int uvm_open(struct inode *inode, struct file *file) { return 0; }

static const struct file_operations uvm_fops = {
	.owner = THIS_MODULE,
	.open = uvm_open,
	.llseek = noop_llseek,
};

static int __init uvm_init(void)
{
	pr_info("nvidia_uvm: stand-in for nvidia %s\n", nvidia_stand_in_version());
	uvm_major = register_chrdev(0, "nvidia-uvm", &uvm_fops);
	if (uvm_major < 0)
		return uvm_major;
	uvm_class = class_create(THIS_MODULE, "nvidia_uvm");
	if (IS_ERR(uvm_class)) {
		unregister_chrdev(uvm_major, "nvidia-uvm");
		return PTR_ERR(uvm_class);
	}
	device_create(uvm_class, NULL, MKDEV(uvm_major, 0), NULL, "nvidia-uvm");
	return 0;
}

static void __exit uvm_exit(void)
{
	device_destroy(uvm_class, MKDEV(uvm_major, 0));
	class_destroy(uvm_class);
	unregister_chrdev(uvm_major, "nvidia-uvm");
}

module_init(uvm_init);
module_exit(uvm_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION);
MODULE_DESCRIPTION("provision's stand-in for nvidia-uvm (tests only)");
